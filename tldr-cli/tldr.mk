# tldr: demo, benchmark and paper reproductions (included by the root Makefile, which
# defines BIN, DATA_ROOT and the offline HF variables).
#
#   make demo-tldr [TOY_SEED=N]  toy world, offline: ERM vs TLDR vs DFR (tiny CLIP, shipped
#                         toy words), then the `tldr compare` table: paired differences,
#                         95 % intervals, p-values (tldr_cli/demo.py). Runs and
#                         demo_table.md go to runs/tldr/demo/seed-N.
#   make bench-tldr       projector solve + one retraining epoch at CelebA scale (synthetic)
#   make reproduce-waterbirds DATA_ROOT=/data/waterbird_complete95_forest2water2 \
#        GAP_PAIRS=/data/coco2014 WORDS=waterbirds_words.json
#   make reproduce-celeba     DATA_ROOT=/data/celeba GAP_PAIRS=/data/coco2014 WORDS=celeba_words.json
#
# Reproductions first run `tldr check-data` (every image and caption file present, the word
# lists name the dataset's classes), then train ERM with BOTH recipes (the paper repo's
# script.sh: 1 epoch, lr 1e-4; DFR's protocol: 100 / 50 epochs, lr 1e-3, augmentation),
# then filter the word lists and retrain (TLDR and DFR) on each classifier; a rerun
# continues an interrupted ERM training (--resume once its run folder holds a config.json,
# with the same settings). WORDS is a word-list JSON from `tldr generate`
# (an LLM, or --from-file with the published lists); ResNet-50 ImageNet weights and
# ViT-B-32 OpenAI weights are downloaded once by torchvision / open_clip unless
# BACKBONE_WEIGHTS / CLIP_PRETRAINED name local files.

DEMOS += demo-tldr
BENCHES += bench-tldr

TLDR_RUNS ?= runs/tldr
TLDR_DEVICE ?= auto
TLDR_DEMO_DEVICE ?= cpu
GAP_PAIRS ?= $(DATA_ROOT)/coco2014
BACKBONE_WEIGHTS ?= IMAGENET1K_V1
CLIP_PRETRAINED ?= openai
TLDR_RECIPES := paper-repo dfr

.PHONY: demo-tldr bench-tldr reproduce-waterbirds reproduce-celeba

demo-tldr: install
	$(BIN)/python -m tldr_cli.demo --toy-seed $(TOY_SEED) --device $(TLDR_DEMO_DEVICE) \
		--out $(TLDR_RUNS)/demo/seed-$(TOY_SEED)

bench-tldr: install
	$(BIN)/python bench/tldr_bench.py --device $(if $(filter auto,$(TLDR_DEVICE)),cpu,$(TLDR_DEVICE))

# $(call tldr_reproduce,PRESET,DFR_RECIPE)
define tldr_reproduce
	@test -e "$(DATA_ROOT)" || { echo "DATA_ROOT=$(DATA_ROOT) not found (see tldr-cli/README.md)"; exit 2; }
	@test -n "$(WORDS)" || { echo "set WORDS=<word-list JSON from tldr generate>"; exit 2; }
	$(BIN)/tldr check-data --preset $(1) --data-root "$(DATA_ROOT)" --gap-pairs "$(GAP_PAIRS)" \
		--words $(WORDS)
	set -e; for recipe in paper-repo $(2); do \
		out=$(TLDR_RUNS)/$(1)/$$recipe; \
		$(BIN)/tldr erm --preset $(1) --data-root "$(DATA_ROOT)" --erm-recipe $$recipe \
			--backbone-weights $(BACKBONE_WEIGHTS) --device $(TLDR_DEVICE) -o $$out/erm \
			$$(test -f $$out/erm/config.json && echo --resume); \
		$(BIN)/tldr filter --preset $(1) --data-root "$(DATA_ROOT)" --classifier $$out/erm \
			--words $(WORDS) --gap-pairs "$(GAP_PAIRS)" --clip-pretrained $(CLIP_PRETRAINED) \
			--device $(TLDR_DEVICE) -o $$out/filter --overwrite; \
		$(BIN)/tldr retrain --preset $(1) --data-root "$(DATA_ROOT)" --classifier $$out/erm \
			--words $$out/filter/wordlists.json --gap-pairs "$(GAP_PAIRS)" \
			--clip-pretrained $(CLIP_PRETRAINED) --method both --device $(TLDR_DEVICE) \
			-o $$out/retrain --overwrite; \
	done
endef

reproduce-waterbirds: install
	$(call tldr_reproduce,waterbirds,dfr-waterbirds)

reproduce-celeba: install
	$(call tldr_reproduce,celeba,dfr-celeba)
