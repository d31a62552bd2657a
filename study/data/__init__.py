"""Data: declared datasets, synthetic generator, SimpleITK layouts, preprocessing, splits, sampling.

The path a trial takes (``study.trial``)::

    root = synthetic.ensure_dataset(config.dataset, data_dir)  # synthetic presets only
    info = inline.dataset_info(config.dataset, root)  # DatasetInfo: channels, classes, r, LCC
    train_ids, test_ids = splits.split(loader.list_cases(info, root), test_cases, fraction,
                                       counts=info.train_counts)
    case = loader.load_case(info, root, case_id, cache_dir=...)      # preprocessed, cached
    sampler = sampling.PatchSampler(train_cases, patch, fg_fraction, seed, label_patch=...,
                                    augmentation=..., bg_aug_prob=..., rare=info.rare_vector())
    images, labels = sampler.sample(batch_size)

``study data check ROOT --layout NAME`` (:mod:`study.data.check`) validates a whole dataset.

Modules, each importing only those listed before it (and ``_atomic``, the locks and atomic
folder publication of the caches):

* :mod:`~study.data.presets` — the synthetic presets' channels, layout, default generator
  parameters and their valid ranges (standard library only);
* :mod:`~study.data.registry` — the declared datasets (standard library only);
* :mod:`~study.data.layouts` — where each on-disk layout keeps a case's files;
* :mod:`~study.data.inline` — a trial's ``DatasetInfo``: declared, synthetic, or a dataset in
  nnU-Net's or a Decathlon task's format named inline by the study (its ``dataset.json``);
* :mod:`~study.data.stored` — whether a file holds every byte its header promises;
* :mod:`~study.data.case` — :class:`~study.data.case.Case` and
  :class:`~study.data.case.DataError`, what the package hands to training;
* :mod:`~study.data.reader` — list a dataset's cases; read and check one case's files;
* :mod:`~study.data.preprocess` — resample, crop, normalise a case; the on-disk cache;
* :mod:`~study.data.loader` — load training-ready cases (read, preprocess, cache);
* :mod:`~study.data.splits` — the fixed test set and nested training fractions;
* :mod:`~study.data.check` — check a whole dataset (``study data check``);
* :mod:`~study.data.synthetic` — generate the synthetic presets and write them in a layout;
* :mod:`~study.data.augmentation`, :mod:`~study.data.sampling` — patches, oversampling and
  eq. 21's asymmetric augmentation.
"""
