"""The trial: one configuration trained on its source and evaluated on its targets.

- config      the typed configuration (pydantic) and the paper's conv numbering; no torch
- registry    the names a configuration may use and their defaults, as data; no torch
- selection   selection protocols, splits, standard errors, chance levels; no torch
- score_info  what the label-free selection scores are; no torch
- shaping     forward hooks, shaping functions, the modes' behaviour
- model       ResNet-18 and its weights
- datasets    the dataset registry (PACS, DomainBed's layouts, `folder`), layout checks and the
              one listing of a data root that the preflight and the trial share; no torch
- decoding    image files to uint8 pixels (image modes, EXIF orientation, the authors' Resize)
- cache       the decode caches: PACS's `.pt` file; the parallel, resumable, memory-mapped one
- augmentation  the paper's train transform on whole batches on the trial's device
- streaming   batches streamed from the cache when a trial's images exceed its device budget
- loading     what a trial reads: its domains, split by protocol, in memory or streamed;
              source batches (union, balanced) and lodo's fold data
- pairing     which target images go with each source batch
- scores      label-free scores of a model's predictions on unlabelled target images
- training    `run_trial`: per-epoch reports and exact checkpoints
- usage       what a trial's process and its GPUs use, per epoch (psutil, NVML); no torch

May import torch, torchvision, numpy, PIL, pydantic and the kernel; never Ray, MLflow or Optuna.
"""
