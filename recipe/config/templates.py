"""Text `recipe init` writes: the starter config and the Makefile snippet."""

STARTER = """\
# recipe experiment config: `recipe inspect {name}.yaml` starts stage 1.
name: {name}              # runs/<name>/ holds everything this experiment writes
seed: 0
data:
  source: builtin:digits  # builtin:<sklearn set> | path to .csv/.parquet/.npz | image folder | "module:function"
  target: label           # target column for tabular files
  split: {{val: 0.15, test: 0.15, stratify: true}}
  normalize: standard     # statistics from the train split only
model:
  kind: mlp               # linear | mlp | cnn | resnet | "package.module:Factory"
  hidden: [256, 256]
  activation: relu
train:
  optimizer: adam
  lr: 3.0e-4
  batch_size: 64
  epochs: 30
tune:
  trials: 20
  space:
    train.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}
    model.dropout: {{low: 0.0, high: 0.5}}
ensemble:
  top_k: 5
"""

MAKEFILE_SNIPPET = """\
# recipe stages as Make targets: each refuses (exit 3) until the one before it passed.
CONFIG ?= {name}.yaml
.PHONY: inspect baseline overfit regularize tune ensemble
inspect:    ; recipe inspect $(CONFIG)
baseline:   inspect ; recipe baseline $(CONFIG)
overfit:    baseline ; recipe overfit-batch $(CONFIG)
regularize: overfit ; recipe regularize $(CONFIG)
tune:       regularize ; recipe tune $(CONFIG) --random-search
ensemble:   tune ; recipe ensemble $(CONFIG)
"""
