#!/usr/bin/env python3
"""Executes the Tiltfile under a Starlark interpreter (PyPI starlark-go, the Go
implementation Tilt itself embeds) with the Tilt builtins it calls replaced by stubs
that take Tilt's parameter names (from Tilt's API reference) and record each call. Then:

  - the Tiltfile runs to the end in context kind-eventpipe, and stops with fail() in any
    other context;
  - every path it references exists: k8s_yaml files, the helm() chart (with Chart.yaml),
    docker_build's context and Dockerfile, local_resource deps;
  - every resource_deps entry names a resource the Tiltfile declares;
  - every `name:kind` object given to k8s_resource is in a YAML file or blob it applies,
    or (a CustomResourceDefinition) in the chart's crds/; objects rendered from the
    chart's templates are listed, not checked: there is no renderer here;
  - the image it builds is the chart's default image.repository and the example
    EventPipeline's spec.image.repository, and EventPipeline images are injected through
    image_object {.spec.image, repository, tag}.

A builtin without a stub is an "undefined" error from Starlark, so a new call needs a stub.

usage: tiltfile_check.py REPO_ROOT
"""
import inspect
import pathlib
import sys

import starlark_go
import yaml

BLOB = "<tilt-stub-blob>"
HELM = "<tilt-stub-helm>"
KIND_CONTEXT = "kind-eventpipe"
EVENTPIPELINE_IMAGE_OBJECT = {"json_path": "{.spec.image}", "repo_field": "repository", "tag_field": "tag"}


# Signatures of the Tilt builtins the Tiltfile may call (docs.tilt.dev/api.html).
def docker_build(ref, context, build_args=None, dockerfile="Dockerfile", dockerfile_contents="", live_update=None,
                 match_in_env_vars=False, ignore=None, only=None, entrypoint=None, target="", ssh="", network="",
                 secret="", extra_tag="", container_args=None, cache_from=None, pull=False, platform="",
                 env_vars=None): ...
def k8s_yaml(yaml, allow_duplicates=False): ...  # noqa: E704
def helm(paths, name="", namespace="", values=None, set=None, kube_version="", skip_crds=False): ...  # noqa: E704
def k8s_resource(workload="", new_name="", port_forwards=None, extra_pod_selectors=None, trigger_mode=None,
                 resource_deps=None, objects=None, auto_init=True, pod_readiness="", links=None, labels=None,
                 discovery_strategy=""): ...
def local_resource(name, cmd="", deps=None, trigger_mode=None, resource_deps=None, ignore=None, auto_init=True,
                   serve_cmd="", cmd_bat="", serve_cmd_bat="", allow_parallel=False, links=None, tags=None,
                   env=None, serve_env=None, readiness_probe=None, dir="", serve_dir="", labels=None): ...
def k8s_kind(kind, *, image_json_path=None, api_version=None, image_object=None, pod_readiness=""): ...  # noqa: E704
def allow_k8s_contexts(contexts): ...  # noqa: E704
def update_settings(max_parallel_updates=3, k8s_upsert_timeout_secs=30, suppress_unused_image_warnings=None): ...  # noqa: E704
def blob(contents): ...  # noqa: E704
def watch_file(path): ...  # noqa: E704


SIGNATURES = [docker_build, k8s_yaml, helm, k8s_resource, local_resource, k8s_kind, allow_k8s_contexts,
              update_settings, blob, watch_file]


def run(root, context):
    calls = []

    def stub(signature):
        sig = inspect.signature(signature)

        def call(*args, **kwargs):
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{signature.__name__}(): {e}") from None
            bound.apply_defaults()
            calls.append((signature.__name__, dict(bound.arguments)))
            if signature.__name__ == "blob":
                return BLOB + bound.arguments["contents"]
            if signature.__name__ == "helm":
                return HELM + bound.arguments["paths"]
            return None

        return call

    builtins = {s.__name__: stub(s) for s in SIGNATURES}
    builtins["k8s_context"] = lambda: context
    # Tilt's dialect: top-level if/for, reassignment, sets and while.
    starlark_go.configure_starlark(allow_set=True, allow_global_reassign=True, allow_recursion=True)
    interpreter = starlark_go.Starlark(globals=builtins, print=lambda s: None)
    interpreter.exec((root / "Tiltfile").read_text(), filename="Tiltfile")
    return calls


def objects_in(text):
    found = set()
    for doc in yaml.safe_load_all(text):
        if doc:
            found.add((doc["metadata"]["name"], doc["kind"].lower()))
    return found


def check(root, calls):
    failures = []
    notes = []

    def need_path(what, rel):
        if not (root / rel).exists():
            failures.append(f"{what}: path {rel} does not exist")
        else:
            notes.append(f"{what}: {rel}")

    declared = set()
    applied_objects = set()
    helm_charts = []
    helm_crds = set()
    built = []
    kinds = {}
    for name, args in calls:
        if name == "k8s_yaml":
            value = args["yaml"]
            for item in value if isinstance(value, list) else [value]:
                if item.startswith(BLOB):
                    applied_objects |= objects_in(item[len(BLOB):])
                elif item.startswith(HELM):
                    pass
                else:
                    need_path("k8s_yaml", item)
                    if (root / item).exists():
                        applied_objects |= objects_in((root / item).read_text())
        elif name == "helm":
            need_path("helm chart", args["paths"])
            need_path("helm chart", str(pathlib.Path(args["paths"]) / "Chart.yaml"))
            helm_charts.append(args)
            # crds/ is plain YAML, applied as it is: its objects can be checked.
            for crd in sorted((root / args["paths"] / "crds").glob("*.yaml")):
                helm_crds.update(objects_in(crd.read_text()))
        elif name == "docker_build":
            need_path(f"docker_build {args['ref']} context", args["context"])
            need_path(f"docker_build {args['ref']} dockerfile", args["dockerfile"])
            built.append(args["ref"])
        elif name == "local_resource":
            declared.add(args["name"])
            for dep in args["deps"] or []:
                need_path(f"local_resource {args['name']} deps", dep)
        elif name == "k8s_resource":
            declared.add(args["new_name"] or args["workload"])
        elif name == "k8s_kind":
            kinds[args["kind"]] = args
        elif name == "watch_file":
            need_path("watch_file", args["path"])

    for name, args in calls:
        if name in ("local_resource", "k8s_resource"):
            who = args.get("name") or args.get("new_name") or args.get("workload")
            for dep in args["resource_deps"] or []:
                if dep not in declared:
                    failures.append(f"{who}: resource_deps names {dep!r}, which the Tiltfile does not declare")
        if name == "k8s_resource":
            for obj in args["objects"] or []:
                parts = obj.split(":")
                key = (parts[0], parts[1].lower() if len(parts) > 1 else "")
                if key in applied_objects:
                    notes.append(f"k8s_resource object {obj}: applied by the Tiltfile")
                elif key[1] == "customresourcedefinition":
                    if key in helm_crds:
                        notes.append(f"k8s_resource object {obj}: in the chart's crds/")
                    else:
                        failures.append(f"k8s_resource object {obj}: not in the chart's crds/")
                elif helm_charts:
                    notes.append(f"k8s_resource object {obj}: from helm() (not rendered here)")
                else:
                    failures.append(f"k8s_resource object {obj}: not in any YAML the Tiltfile applies")

    values = yaml.safe_load((root / "charts/eventpipe-operator/values.yaml").read_text())
    repository = values["image"]["repository"]
    if built != [repository]:
        failures.append(f"docker_build builds {built}; the chart's image.repository is {repository!r}")
    example = root / "k8s/examples/pre-delinquency.yaml"
    if example.exists():
        for doc in yaml.safe_load_all(example.read_text()):
            if doc and doc.get("kind") == "EventPipeline":
                image = (doc.get("spec") or {}).get("image") or {}
                if image.get("repository") != repository:
                    failures.append(f"{example.relative_to(root)}: spec.image.repository is "
                                    f"{image.get('repository')!r}, Tilt builds {repository!r}")
    evp = kinds.get("EventPipeline")
    if not evp or evp["image_object"] != EVENTPIPELINE_IMAGE_OBJECT:
        failures.append(f"k8s_kind('EventPipeline') must inject through image_object={EVENTPIPELINE_IMAGE_OBJECT}, "
                        f"got {evp}")
    return notes, failures


def main():
    root = pathlib.Path(sys.argv[1]).resolve()
    failures = []
    try:
        calls = run(root, KIND_CONTEXT)
    except starlark_go.StarlarkError as e:
        print(f"  FAIL Tiltfile in context {KIND_CONTEXT}: {e}")
        sys.exit(1)
    print(f"  ok Tiltfile ran in context {KIND_CONTEXT}: {len(calls)} builtin calls")
    notes, failures = check(root, calls)
    for n in notes:
        print(f"  ok {n}")
    try:
        run(root, "docker-desktop")
        failures.append("Tiltfile ran in context docker-desktop; it must fail() outside kind-eventpipe")
    except starlark_go.EvalError as e:
        if "kube context" not in str(e):
            failures.append(f"Tiltfile in context docker-desktop failed, but not with the context check: {e}")
        else:
            print("  ok Tiltfile stops with fail() in context docker-desktop")
    for f in failures:
        print(f"  FAIL {f}")
    if failures:
        sys.exit(1)
    print("  tiltfile: no failures")


if __name__ == "__main__":
    main()
