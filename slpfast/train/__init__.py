"""The pre-training loop: configuration (:mod:`.config`), the trainer (:mod:`.trainer`), its data
path (:mod:`.data`, :mod:`.device_copy`), checkpoints, optimizer, logging and torch.distributed
set-up. Entry point: ``torchrun -m slpfast.pretrain``."""
