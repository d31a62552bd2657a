"""Operations tooling that runs before a study, never inside one: offline checks of the Ray
cluster-launcher config (:mod:`ops.cluster`, command ``study-cluster-check``)."""
