#!/usr/bin/env bash
# vlp on the lowest versions setup.cfg declares for transformers, accelerate, datasets and timm: a second venv
# (.venv-min) holds just those (and what they need that differs), and sees everything else (torch, numpy, vlp
# itself) through the main .venv, so nothing heavy is installed twice. Then .ci/smoke_min_deps.py builds, trains,
# saves, loads and runs the recipe. Run after install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
main_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
pins=$(.venv/bin/python - <<'PY'
import configparser, re
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
floors = {}
for line in cfg["options"]["install_requires"].split("\n"):
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", line)
    if m:
        floors[m.group(1).lower()] = m.group(2)
extras = {"transformers": "[kernels]"}  # kernels pinned to what that transformers release works with
print(" ".join(f"{name}{extras.get(name, '')}=={floors[name]}" for name in ("transformers", "accelerate", "datasets", "timm")))
PY
)
rm -rf .venv-min
"$PYTHON" -m venv .venv-min
min_site=$(.venv-min/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import site; site.addsitedir('$main_site')" > "$min_site/zz_main_venv.pth"  # after .venv-min's own packages
echo "installing $pins into .venv-min"
# pip reports conflicts with packages of the main venv that need newer releases (open_clip_torch): not used here
.venv-min/bin/python -m pip install -q --disable-pip-version-check $pins 2>&1 | grep -v "^WARNING: Location\|resolver does not\|requires .* which is incompatible" || true
HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv-min/bin/python .ci/smoke_min_deps.py
