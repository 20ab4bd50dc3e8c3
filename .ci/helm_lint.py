#!/usr/bin/env python3
"""`helm lint` of a chart through libhelm from the PyPI wheel helm-sdkpy, called with
ctypes (helm-sdkpy's own Python wrapper needs Python >= 3.12; this machine has 3.11).

The C functions used, as declared in the wheel's helm_sdkpy/_lib/<platform>/libhelm_sdkpy.h
(checked below, so a changed signature fails loudly instead of crashing ctypes):

  int   helm_sdkpy_config_create(char* namespace, char* kubeconfig, char* kubecontext,
                                 char* options_json, helm_sdkpy_handle* handle_out);
  int   helm_sdkpy_lint(helm_sdkpy_handle handle, char* chart_path, char** result_json);
  char* helm_sdkpy_last_error(void);          owned by the library: not freed
  void  helm_sdkpy_free(void* ptr);           frees result_json
  void  helm_sdkpy_config_destroy(helm_sdkpy_handle handle);
  helm_sdkpy_handle is unsigned long long; 0 is success for the int results.

The lint result is Helm's lint result as JSON: {"TotalChartsLinted": n, "Messages":
[{"Severity": s, "Path": p, "Err": {}}], "Errors": [...]}, with Helm's severities
0 unknown, 1 info, 2 warning, 3 error. Go marshals an error value as {}, so the message
text does not survive; the path does. Any error-severity message fails.

Helm lint renders every template with the chart's values.yaml and checks the values
against values.schema.json. Besides the chart as it is, this lints:
  - variants: copies of the chart whose values.yaml turns on the other branches of the
    templates (ServiceMonitor, no RBAC and an existing ServiceAccount, no leader
    election, one watched namespace), each of which must lint clean;
  - canaries: copies broken on purpose (a value the schema forbids, a template that
    does not parse, a template whose output is not YAML), each of which must fail, so a lint
    that passes everything cannot pass this check. (Helm lints in "lint mode", where
    `fail` and `required` only log: the templates' own guards are not exercised here.)

usage: helm_lint.py LIBHELM_DIR CHART_DIR
"""
import copy
import ctypes
import json
import pathlib
import shutil
import sys
import tempfile

import yaml

SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}
ERROR = 3

EXPECTED_DECLARATIONS = [
    "extern int helm_sdkpy_config_create(char* namespace, char* kubeconfig, char* kubecontext, "
    "char* options_json, helm_sdkpy_handle* handle_out);",
    "extern int helm_sdkpy_lint(helm_sdkpy_handle handle, char* chart_path, char** result_json);",
    "extern char* helm_sdkpy_last_error(void);",
    "extern void helm_sdkpy_free(void* ptr);",
    "extern void helm_sdkpy_config_destroy(helm_sdkpy_handle handle);",
    "typedef unsigned long long helm_sdkpy_handle;",
]

VARIANTS = {
    "serviceMonitor on": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "no RBAC, existing ServiceAccount": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}},
    "no leader election, 1 namespace": {"leaderElection": {"enabled": False}, "watchNamespace": "eventpipe"},
    "pinned tag, pull secret, extra env": {
        "image": {"tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4317"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
    },
}


def break_schema(chart):
    values = yaml.safe_load((chart / "values.yaml").read_text())
    values["replicaCount"] = "one"
    (chart / "values.yaml").write_text(yaml.safe_dump(values))


def break_template(chart):
    (chart / "templates" / "zz-canary.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }\n")


def bad_rendered_yaml(chart):
    # A valid template whose output is not YAML.
    (chart / "templates" / "zz-canary.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n  labels: [\n"
    )


CANARIES = {
    "replicaCount is a string": break_schema,
    "unclosed template action": break_template,
    "rendered output is not YAML": bad_rendered_yaml,
}


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def merge_values(chart, override):
    values = yaml.safe_load((chart / "values.yaml").read_text())
    (chart / "values.yaml").write_text(yaml.safe_dump(deep_merge(values, override)))


class LibHelm:
    def __init__(self, lib_dir):
        headers = sorted(pathlib.Path(lib_dir).rglob("libhelm_sdkpy.h"))
        libs = sorted(pathlib.Path(lib_dir).rglob("libhelm_sdkpy.so"))
        if not headers or not libs:
            sys.exit(f"helm_lint: no libhelm_sdkpy.h / libhelm_sdkpy.so under {lib_dir}")
        header = " ".join(headers[0].read_text().split())
        missing = [d for d in EXPECTED_DECLARATIONS if " ".join(d.split()) not in header]
        if missing:
            sys.exit(f"helm_lint: {headers[0]} no longer declares, as expected:\n  " + "\n  ".join(missing))
        self.path = libs[0]
        lib = ctypes.CDLL(str(libs[0]))
        handle = ctypes.c_ulonglong
        lib.helm_sdkpy_config_create.argtypes = [ctypes.c_char_p] * 4 + [ctypes.POINTER(handle)]
        lib.helm_sdkpy_config_create.restype = ctypes.c_int
        lib.helm_sdkpy_lint.argtypes = [handle, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.helm_sdkpy_lint.restype = ctypes.c_int
        lib.helm_sdkpy_last_error.argtypes = []
        lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
        lib.helm_sdkpy_free.argtypes = [ctypes.c_void_p]
        lib.helm_sdkpy_free.restype = None
        lib.helm_sdkpy_config_destroy.argtypes = [handle]
        lib.helm_sdkpy_config_destroy.restype = None
        self.lib = lib
        self.handle = handle()
        # No cluster: lint needs none; kubeconfig and context stay NULL.
        rc = lib.helm_sdkpy_config_create(b"default", None, None, b"{}", ctypes.byref(self.handle))
        if rc != 0:
            sys.exit(f"helm_lint: helm_sdkpy_config_create returned {rc}: {self.last_error()}")

    def last_error(self):
        err = self.lib.helm_sdkpy_last_error()
        return err.decode() if err else "(no message)"

    def lint(self, chart):
        out = ctypes.c_void_p()
        rc = self.lib.helm_sdkpy_lint(self.handle.value, str(chart).encode(), ctypes.byref(out))
        if rc != 0:
            raise RuntimeError(f"helm_sdkpy_lint returned {rc}: {self.last_error()}")
        if not out.value:
            raise RuntimeError("helm_sdkpy_lint returned no result")
        try:
            return json.loads(ctypes.string_at(out.value).decode())
        finally:
            self.lib.helm_sdkpy_free(out)

    def close(self):
        self.lib.helm_sdkpy_config_destroy(self.handle.value)


def errors_of(result):
    return [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= ERROR]


def describe(messages):
    return ", ".join(f"{SEVERITY.get(m.get('Severity'), m.get('Severity'))} at {m.get('Path')}" for m in messages) or "none"


def main():
    lib_dir, chart = sys.argv[1], pathlib.Path(sys.argv[2]).resolve()
    helm = LibHelm(lib_dir)
    print(f"  libhelm: {helm.path}")
    failures = []
    checks = 0

    result = helm.lint(chart)
    checks += 1
    if result.get("TotalChartsLinted") != 1:
        failures.append(f"{chart.name}: linted {result.get('TotalChartsLinted')} charts, expected 1: {result}")
    errors = errors_of(result)
    for m in result.get("Messages") or []:
        print(f"  {chart.name}: {SEVERITY.get(m.get('Severity'))} at {m.get('Path')}")
    if errors:
        failures.append(
            f"{chart.name}: {describe(errors)} (libhelm drops the message text; "
            f"`helm lint {chart}` on a machine with helm prints it)"
        )
    else:
        print(f"  ok {chart.name}: no error-severity message")

    with tempfile.TemporaryDirectory() as tmp:
        for name, override in VARIANTS.items():
            copy_dir = pathlib.Path(tmp) / f"v{checks}" / chart.name
            shutil.copytree(chart, copy_dir)
            merge_values(copy_dir, override)
            errors = errors_of(helm.lint(copy_dir))
            checks += 1
            if errors:
                failures.append(f"variant '{name}': {describe(errors)}")
            else:
                print(f"  ok variant '{name}': no error-severity message")
        for name, breaker in CANARIES.items():
            copy_dir = pathlib.Path(tmp) / f"c{checks}" / chart.name
            shutil.copytree(chart, copy_dir)
            breaker(copy_dir)
            errors = errors_of(helm.lint(copy_dir))
            checks += 1
            if errors:
                print(f"  ok canary '{name}': lint fails as it must ({describe(errors)})")
            else:
                failures.append(f"canary '{name}': lint passed a chart broken on purpose")
    helm.close()

    for f in failures:
        print(f"  FAIL {f}")
    if failures:
        sys.exit(1)
    print(f"  helm lint: {checks} lints as expected")


if __name__ == "__main__":
    main()
