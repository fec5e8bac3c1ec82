"""The torch-free layer that training and serving both stand on.

`core.bundle` is the bundle format (manifest schema, loader, verifier); `core.inference` holds, per
task, the one pre-processing and post-processing that `bert evaluate`, `bert finetune`'s evaluation,
`bert serve` and the client all run; `core.args` builds command lines from settings dataclasses.
Nothing here imports torch, `training`, `service` or `cli`.
"""
