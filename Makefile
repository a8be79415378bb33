# Two commands for a fresh machine: `make demo` and `make test`. Each sets up .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU wheel of torch: an unpinned torch would pull gigabytes of CUDA packages.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup system-deps demo test test-slow bench bench-vap audit quality recipes clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m medgen_monai demo --out out/demo
	@echo "demo written: out/demo/gallery.png and out/demo/<bundle>/grid.png for ldm_label_derm and vap_diffusion_{derm,colon,cxr}"

test: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 2

# The PACS tests run a real Orthanc (with its DICOMweb plugin) and the DICOM outputs are checked with dciodvfy:
# Debian packages, installed when missing. The package's postinst may start a system Orthanc on 4242/8042;
# harmless: the tests start their own on free 127.0.0.1 ports (tests/orthanc.py).
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
system-deps:
	@# /usr/sbin is not on every user's PATH: test the paths the tests use
	test -x /usr/sbin/Orthanc && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so && command -v dciodvfy >/dev/null \
	  || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc orthanc-dicomweb dicom3tools; }

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/phantoms.py
	test -d data/derm || $(PY) -m medgen_monai phantoms --kind derm --n 5000 --out data/derm --seed 0
	$(PY) benchmarks/sampling.py --dataset_dir data/derm

# the VAP-Diffusion ablation (about 3 h per modality on 2 CPU cores; a GPU is the place for it): benchmarks/results/vap_ablation*.json + .png, then docs/results.md
bench-vap: $(STAMP)
	$(PY) benchmarks/vap_ablation.py --modalities derm,colon,cxr --seeds 0,1,2 --jobs 2
	$(PY) benchmarks/vap_projection_sweep.py --modalities derm,colon,cxr
	$(PY) docs/build_docs.py

# retrain the shipped audit networks (about 50 minutes on 2 cores, one torch thread); see docs/audit.md. Not in CI.
audit: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m medgen_monai train-audit --kind all
	$(PY) docs/build_docs.py

# every bundle at every sampler setting against its ceilings (about an hour on 2 cores): docs/quality.md
quality: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/quality.py
	$(PY) docs/build_docs.py

# training-recipe pilots (hours on 2 cores; two runs share the cores, one torch thread each) and what each
# bundle's autoencoder keeps of the attributes: benchmarks/results/{recipes,autoencoders}.json, docs/engine.md
recipes: $(STAMP)
	test -d data/cxr || $(PY) -m medgen_monai phantoms --kind cxr --n 5000 --out data/cxr --seed 0
	test -d data/derm || $(PY) -m medgen_monai phantoms --kind derm --n 5000 --out data/derm --seed 0
	OMP_NUM_THREADS=1 $(PY) benchmarks/recipes.py --recipes rflow,rflow_per_channel & \
	OMP_NUM_THREADS=1 $(PY) benchmarks/recipes.py --recipes eps,v_min_snr; wait
	OMP_NUM_THREADS=1 $(PY) benchmarks/recipes.py --bundles vap_diffusion_derm --recipes ae_latent8,ae_latent8_adv --iterations 2500,5000 --n 400
	OMP_NUM_THREADS=1 $(PY) benchmarks/autoencoders.py
	$(PY) docs/build_docs.py

clean:
	rm -rf $(VENV) out .pytest_cache
