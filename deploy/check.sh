#!/usr/bin/env bash
# Static checks of the deployment, no cluster needed: every overlay renders with kustomize
# and validates against the Kubernetes API schemas (offline, strict: unknown fields fail),
# and the Dockerfile passes hadolint.
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes release the manifests promise to work on, and the newest schema set.
KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-"1.29.0 1.37.0"}

for tool in kubectl kubernetes-validate hadolint; do
    if ! command -v "$tool" >/dev/null; then
        echo "deploy/check.sh: $tool is not on PATH" >&2
        exit 1
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=0
overlays=(deploy/k8s/overlays/*/)
if [ ${#overlays[@]} -eq 0 ] || [ ! -d "${overlays[0]}" ]; then
    echo "deploy/check.sh: no overlays under deploy/k8s/overlays" >&2
    exit 1
fi

for overlay in "${overlays[@]}"; do
    overlay=${overlay%/}
    rendered="$work/$(basename "$overlay").yaml"
    echo "+ kubectl kustomize $overlay"
    kubectl kustomize "$overlay" >"$rendered"
    # kustomize prints each document with its top-level keys at column 0.
    documents=$(grep -c '^kind: ' "$rendered" || true)
    if [ "$documents" -eq 0 ]; then
        echo "FAIL $overlay renders no resources" >&2
        failed=1
        continue
    fi
    for version in $KUBERNETES_VERSIONS; do
        echo "+ kubernetes-validate --strict -k $version ($overlay, $documents resources)"
        if ! report=$(kubernetes-validate --strict -k "$version" "$rendered" 2>&1); then
            grep -v '^INFO ' <<<"$report" >&2 || true
            failed=1
            continue
        fi
        # A kind without a schema is only a warning to the tool; here it is a failure,
        # as is any resource the tool did not report as validated.
        if grep -v '^INFO ' <<<"$report" | grep -q .; then
            grep -v '^INFO ' <<<"$report" >&2
            failed=1
        fi
        validated=$(grep -c ' passed for resource ' <<<"$report" || true)
        if [ "$validated" -ne "$documents" ]; then
            echo "FAIL $overlay: $validated of $documents resources validated against $version" >&2
            failed=1
        fi
    done
done

echo "+ hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile || failed=1

if [ "$failed" -ne 0 ]; then
    echo "deploy/check.sh: FAILED" >&2
    exit 1
fi
echo "deploy/check.sh: all overlays valid, Dockerfile clean"
