"""riswb where users already train: Lightning and Hugging Face Trainer callbacks, and
rank-aware runs under torchrun/DDP. Each submodule imports its framework on import, so
`import riswb` never pulls in Lightning or transformers:

* riswb.integrations.lightning.RiswbCallback (and `log_terms`)
* riswb.integrations.transformers.RiswbCallback
* riswb.integrations.distributed: open_workbench (rank 0 only, DDP unwrapped)
"""
