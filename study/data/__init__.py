"""Data: declared datasets, synthetic generator, SimpleITK layouts, preprocessing, splits, sampling.

The path a trial takes (``study.trial``)::

    info = registry.DATASETS[name]                       # DatasetInfo: channels, classes, r, LCC
    root = synthetic.ensure_generated(params, folder, preset=name)   # synthetic presets only
    train_ids, test_ids = splits.split(loader.list_cases(info, root), test_cases, fraction,
                                       counts=info.train_counts)
    case = loader.load_case(info, root, case_id, cache_dir=...)      # preprocessed, cached
    sampler = sampling.PatchSampler(train_cases, patch, fg_fraction, seed, label_patch=...,
                                    augmentation=..., bg_aug_prob=..., rare=info.rare_vector())
    images, labels = sampler.sample(batch_size)

``study data check ROOT --layout NAME`` (:mod:`study.data.check`) validates a whole dataset.
Modules: :mod:`~study.data.registry`, :mod:`~study.data.synthetic`, :mod:`~study.data.layouts`,
:mod:`~study.data.loader`, :mod:`~study.data.preprocess`, :mod:`~study.data.splits`,
:mod:`~study.data.sampling`, :mod:`~study.data.check`.
"""
