# rtd: demo, bench and paper-reproduction targets (included by the root Makefile, which
# defines BIN, DATA_ROOT and the offline HF variables).
RTD := $(BIN)/rtd
RTD_DEMO := runs/rtd/demo
NPROC ?= 1
TRIPLETS ?=
PHI ?=
RTD_OUT ?= runs/reproduce

DEMOS += demo-rtd
BENCHES += bench-rtd
.PHONY: demo-rtd bench-rtd

# Toy CIR world, 2 CPU cores, a few minutes (rtd_cli/demo.py): tiny CLIP -> `rtd train-phi
# --preset toy` (LinCIR-style phi from captions) -> `rtd eval --dataset toy` (base) -> `rtd
# train --preset toy` (RTD) -> `rtd eval` (+ RTD) -> `rtd compare`: paired (intervals, p-values), overall and
# per-attribute tables (queries changing the digit / colour / background) and a bar chart,
# on the toy test split at `rtd eval`'s default size (1,000 queries, 2,000-image gallery).
# Each command is printed before it runs; TOY_SEED=N re-draws captions, triplets and benchmark,
# into its own folder runs/rtd/demo/seed-N (seed 0's runs stay).
demo-rtd: install
	$(BIN)/python -m rtd_cli.demo --toy-seed $(TOY_SEED) --out $(RTD_DEMO)/seed-$(TOY_SEED)

# $(call cpu_then_cuda,SCRIPT,TARGET): a bench on the CPU, then on CUDA when one is present.
cpu_then_cuda = $(BIN)/python $(1) --device cpu && \
	if $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; \
	then $(BIN)/python $(1) --device cuda; else echo "$(2): no CUDA device, GPU rows skipped"; fi

# One training step of a ViT-B-32-sized text tower (random weights): batch 16 on CPU, and
# batch 128 on a GPU when one is present.
bench-rtd: install
	$(call cpu_then_cuda,bench/rtd_train_bench.py,bench-rtd)

# rtd eval's ranking core at CIRCO scale (1,000 queries x 123,403 gallery features, 768-d,
# top-50): chunked top-k vs one full matrix product (+ top-k / + argsort), time and peak
# extra memory, each in its own process.
BENCHES += bench-rtd-retrieval
.PHONY: bench-rtd-retrieval
bench-rtd-retrieval: install
	$(call cpu_then_cuda,bench/rtd_retrieval_bench.py,bench-rtd-retrieval)

# rtd eval's gallery loader alone (rtd_cli.gallery_loader.ImageBatches): img/s and img/s per
# worker for 0, 1, 2 DataLoader workers, PIL decode (--decode cpu) and the tensor path
# (--decode gpu's decode_jpeg + tensor resize, here on the CPU), on 1,024 synthetic 640x480
# JPEGs; then the tensor path's pixel and feature difference from PIL on scikit-image photos.
BENCHES += bench-rtd-loader
.PHONY: bench-rtd-loader
bench-rtd-loader: install
	$(BIN)/python bench/rtd_loader_bench.py --device cpu --images 1024
	@if $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
		$(BIN)/python bench/rtd_loader_bench.py --device cuda --images 8192 --batch-size 128 \
			--workers 0,4,8,16; \
	else echo "bench-rtd-loader: no CUDA device, GPU rows skipped"; fi

# ---------------------------------------------------------------------------------------
# Paper reproduction: <base>+RTD with the `rtd train` preset of each backbone (rtd-vit-l14: the
# official RTD run, 4 GPUs x batch 128, 2000 steps, lr 1e-5, seed 12345; rtd-vit-b32 and
# rtd-vit-bigg14: the same values on the paper's other backbones, ours), then `rtd eval` of base
# and +RTD on every benchmark, all with RTD's prompt "a photo of $ that {mod}" (its evaluation
# protocol for every base, Pic2Word included; `rtd eval` alone defaults to Pic2Word's own
# "a photo of * , {mod}"). Needs:
#   DATA_ROOT=...  folder with fashioniq/ cirr/ circo/ genecis/ in their official layouts
#                  (check each with `rtd check-data --dataset X --data-root DATA_ROOT/X`)
#   TRIPLETS=...   LLM_triplets.json (RTD README's Google Drive) or a hub id
#   PHI=...        the base's projection for that backbone (SEARLE_ViT-B32.pt / -L14.pt from
#                  SEARLE's torch.hub release, Pic2Word's released IM2TEXT (ViT-L/14 only), or
#                  `make reproduce-lincir-phi-<backbone>` for LinCIR, whose paper checkpoints
#                  were never released)
#   NPROC=1        processes for torchrun (one per GPU). The rtd-vit-* presets are one process
#                  at batch 128, what the official 4-GPU run computed (its ranks never averaged
#                  gradients; rtd-cli/README.md "One process, not four"); the averaged 4 x 128
#                  run is NPROC=4 RTD_PRESET_ViT-L-14=rtd-vit-l14-ddp4
# e.g. make reproduce-rtd-lincir-ViT-L-14 DATA_ROOT=/data TRIPLETS=/data/LLM_triplets.json PHI=phi.pt
# `--resume` when the run folder holds a started run (its config.json), so that a target
# started again continues where it stopped; a fresh folder starts a run (--resume needs one).
rtd_resume = $(if $(wildcard $(1)/config.json),--resume)
RTD_BASES := lincir searle pic2word
RTD_EVALS := fashioniq:val cirr:val cirr:test circo:val circo:test genecis:test
# backbone -> `rtd train` preset (the paper's ViT-G/14 runs are LinCIR's only)
RTD_PRESET_ViT-B-32 := rtd-vit-b32
RTD_PRESET_ViT-L-14 := rtd-vit-l14
RTD_PRESET_ViT-bigG-14 := rtd-vit-bigg14

define rtd_reproduce
.PHONY: reproduce-rtd-$(1)-$(2)
reproduce-rtd-$(1)-$(2): install
	@test -n "$$(PHI)" || { echo "PHI=... (the $(1) projection for $(2)) is required"; exit 2; }
	@test -n "$$(TRIPLETS)" || { echo "TRIPLETS=... (LLM_triplets.json) is required"; exit 2; }
	$(BIN)/python -m torch.distributed.run --nproc_per_node $$(NPROC) -m rtd_cli train \
		--preset $(RTD_PRESET_$(2)) --base $(1) --phi $$(PHI) --triplets $$(TRIPLETS) --prompt rtd \
		-o $$(RTD_OUT)/rtd-$(1)-$(2)/train $$(call rtd_resume,$$(RTD_OUT)/rtd-$(1)-$(2)/train)
	for spec in $$(RTD_EVALS); do \
		ds=$$$${spec%%:*}; split=$$$${spec##*:}; \
		$(RTD) eval --dataset $$$$ds --split $$$$split --data-root $$(DATA_ROOT)/$$$$ds \
			--backbone $(2) --base $(1) --phi $$(PHI) --prompt rtd \
			-o $$(RTD_OUT)/rtd-$(1)-$(2)/eval-base-$$$$ds-$$$$split --overwrite || exit 1; \
		$(RTD) eval --dataset $$$$ds --split $$$$split --data-root $$(DATA_ROOT)/$$$$ds \
			--backbone $(2) --base $(1) --phi $$(PHI) --prompt rtd \
			--text-encoder $$(RTD_OUT)/rtd-$(1)-$(2)/train/text_tower.safetensors \
			-o $$(RTD_OUT)/rtd-$(1)-$(2)/eval-rtd-$$$$ds-$$$$split --overwrite || exit 1; \
	done
endef
$(foreach b,$(RTD_BASES),$(foreach m,ViT-B-32 ViT-L-14,$(eval $(call rtd_reproduce,$(b),$(m)))))
$(eval $(call rtd_reproduce,lincir,ViT-bigG-14))

# LinCIR's base projection trained from captions (its paper checkpoints were never released),
# with the `rtd train-phi` preset of each backbone (lincir-vit-l14 / -bigg14: LinCIR's README
# command, 8 GPUs x batch 64, 20000 steps; lincir-vit-b32: the same values, ours):
# make reproduce-lincir-phi-ViT-L-14 CAPTIONS=<hub id or file>, then pass PHI=$(RTD_OUT)/lincir-phi-ViT-L-14/phi.pt
CAPTIONS ?=
PHI_NPROC ?= 8
PHI_PRESET_ViT-B-32 := lincir-vit-b32
PHI_PRESET_ViT-L-14 := lincir-vit-l14
PHI_PRESET_ViT-bigG-14 := lincir-vit-bigg14
define lincir_phi
.PHONY: reproduce-lincir-phi-$(1)
reproduce-lincir-phi-$(1): install
	@test -n "$$(CAPTIONS)" || { echo "CAPTIONS=... (caption file or hub id) is required"; exit 2; }
	$(BIN)/python -m torch.distributed.run --nproc_per_node $$(PHI_NPROC) -m rtd_cli train-phi \
		--preset $(PHI_PRESET_$(1)) --captions $$(CAPTIONS) -o $$(RTD_OUT)/lincir-phi-$(1) \
		$$(call rtd_resume,$$(RTD_OUT)/lincir-phi-$(1))
endef
$(foreach m,ViT-B-32 ViT-L-14 ViT-bigG-14,$(eval $(call lincir_phi,$(m))))
