# robattr: benchmark and paper reproductions (included by the root Makefile, which defines
# BIN, DATA_ROOT and the offline HF variables).
#
#   make demo-robattr [TOY_SEED=N]     offline mini-experiment on MNIST-5k (a few CPU minutes)
#   make bench-robattr                 time / memory per training step: none vs l2cos vs hessian
#   make reproduce-cifar10-lenet      DATA_ROOT=/data/cifar10   (holds cifar-10-batches-py/)
#   make reproduce-cifar10-resnet18   DATA_ROOT=/data/cifar10
#   make reproduce-imagenet100-resnet18 IMAGENET100_ROOT=/data/ImageNet100  (train/, val/ or test/)
#
# Each reproduction trains the three models of the official script (none, hessian, l2cos),
# then attacks (official frame-target manipulation) and evaluates each on the official
# sample: the whole test split, misclassified images included, RPS at eps 4, 8 and 16.
# Training resumes from the latest checkpoint when a target is re-run (--resume once the
# run folder holds its config.json; a fresh folder starts a new run).

BENCHES += bench-robattr
DEMOS += demo-robattr

# The robattr mini-experiment: none vs l2cos (two training seeds each) on MNIST-5k, the
# same digits scored by RPS and the top-k attack, paired differences with bootstrap
# intervals; tables printed and saved to runs/robattr/demo/seed-$(TOY_SEED)/demo_table.md
# (robattr_cli/demo.py; one folder per toy seed, as the gate's runs/effects/seed-N/robattr).
.PHONY: demo-robattr
demo-robattr: install
	$(BIN)/python -m robattr_cli.demo --toy-seed $(TOY_SEED) --out runs/robattr/demo/seed-$(TOY_SEED)

ROBATTR_RUNS ?= runs/robattr-reproduce
ROBATTR_DEVICE ?= auto
CIFAR10_ROOT ?= $(DATA_ROOT)
IMAGENET100_ROOT ?= $(DATA_ROOT)/ImageNet100
ROBATTR_REGS := none hessian l2cos

.PHONY: bench-robattr reproduce-cifar10-lenet reproduce-cifar10-resnet18 reproduce-imagenet100-resnet18

bench-robattr: install
	$(BIN)/python bench/robattr_train_step.py --steps 3 --warmup 1

# $(call robattr_reproduce,PRESET,DATA_ROOT,EXTRA_HESSIAN_FLAGS,ATTACK_EPS)
define robattr_reproduce
	@test -e "$(2)" || { echo "data root $(2) not found: set DATA_ROOT=... (see robattr-cli/README.md)"; exit 2; }
	set -e; for reg in $(ROBATTR_REGS); do \
		out=$(ROBATTR_RUNS)/$(1)/$$reg; \
		extra=""; if [ "$$reg" = hessian ]; then extra="$(3)"; fi; \
		resume=""; if [ -f $$out/train/config.json ]; then resume="--resume"; fi; \
		$(BIN)/robattr train --preset $(1) --data-root "$(2)" --regularizer $$reg $$extra \
			--device $(ROBATTR_DEVICE) -o $$out/train $$resume; \
		$(BIN)/robattr attack --checkpoint $$out/train --attack frame --eps $(4) \
			--device $(ROBATTR_DEVICE) -o $$out/attack --overwrite; \
		$(BIN)/robattr eval --checkpoint $$out/train --attacked $$out/attack --rps-eps 4,8,16 \
			--device $(ROBATTR_DEVICE) -o $$out/eval --overwrite; \
	done
endef

# About 1.4 GPU-hours of training in total: an estimate, not a measurement (README).
reproduce-cifar10-lenet: install
	$(call robattr_reproduce,cifar10-lenet,$(CIFAR10_ROOT),,4)

# About 9 GPU-hours of training in total (estimate, README). The paper attacks ResNet-18
# at eps 2/255.
reproduce-cifar10-resnet18: install
	$(call robattr_reproduce,cifar10-resnet18,$(CIFAR10_ROOT),,2)

# About 40 GPU-hours of training in total (estimate, README); the official script trains
# the Hessian model at batch 64.
reproduce-imagenet100-resnet18: install
	$(call robattr_reproduce,imagenet100-resnet18,$(IMAGENET100_ROOT),--batch-size 64,2)
