#!/usr/bin/env python3
"""Checks on the openshell Helm chart, run by deploy/helm/test.sh.

Each case lints the chart (`helm lint --strict`) and renders it (`helm
template`) with a real helm binary, then asserts on the rendered objects: TLS
Secrets mounted as whole directories (never subPath, which kubelet never
updates), the gateway's args pointing at the mounted files, probes on the
plaintext health port (which no Service publishes), a locked-down security
context, the cert-manager chain, the external certificate served by SNI
(--tls-sni), the OpenShift passthrough Route, and the optional NetworkPolicy. Two releases
rendered into one namespace must not share an object or Secret name. Negative
cases must fail to render with a clear message. Every check prints one PASS or
FAIL line; the last line is the tally.

Usage: chart_checks.py --helm PATH --chart DIR
"""

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RELEASE = "openshell"
NAMESPACE = "openshell"
TLS_DIR = "/etc/openshell-tls"
SERVER_DIR = f"{TLS_DIR}/server"
CLIENT_CA_DIR = f"{TLS_DIR}/client-ca"
CRL_DIR = f"{TLS_DIR}/crl"
EXTERNAL_DIR = f"{TLS_DIR}/external"
HEALTH_PORT = 8081
TLS_PORT = 8080
NONROOT_UID = 65532

# The gateway's flags (README "Flags", `openshell-gateway --help`): value flags take
# `--flag=value`, switches take no value.
VALUE_FLAGS = {
    "--bind", "--health-bind", "--tls-cert", "--tls-key", "--tls-client-ca",
    "--tls-client-auth", "--tls-crl", "--tls-reload-debounce", "--tls-reload-poll",
    "--log-format", "--ocsf-log", "--max-connection-age", "--max-connection-age-grace",
    "--handshake-timeout", "--shutdown-delay", "--shutdown-grace", "--tls-sni",
}
SWITCHES = {"--disable-tls", "--no-tls-reload"}
TLS_ONLY_FLAGS = {
    "--tls-cert", "--tls-key", "--tls-client-ca", "--tls-client-auth", "--tls-crl",
    "--tls-reload-debounce", "--tls-reload-poll", "--no-tls-reload", "--tls-sni",
}
CERT_MANAGER_KINDS = {"Certificate", "Issuer", "ClusterIssuer"}
# Kinds from CRDs, which kubernetes-validate has no schemas for; their checks are below.
CRD_KINDS = CERT_MANAGER_KINDS | {"Route"}
# The external issuer the cases name, and its names.
ISSUER = {"kind": "ClusterIssuer", "name": "letsencrypt", "group": "cert-manager.io"}
EXTERNAL_NAMES = ["gateway.example.com", "*.apps.example.com"]
# cert-manager rejects a Certificate whose commonName is longer than this.
CM_MAX_COMMON_NAME = 64

# Kubernetes versions whose JSON schemas (kubernetes-validate, strict: unknown
# fields rejected) the rendered core objects must satisfy.
K8S_VERSIONS = ("1.29.0", "1.35.0")

# cert-manager's validation: duration >= 1h, renewBefore >= 5m and < duration.
CM_MIN_DURATION = 3600.0
CM_MIN_RENEW_BEFORE = 300.0


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, case, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS [{case}] {name}")
        else:
            self.failed += 1
            print(f"FAIL [{case}] {name}" + (f": {detail}" if detail else ""))
        return ok


@dataclass
class Case:
    name: str
    helm_args: list
    kind: str = "StatefulSet"
    replicas: int = 1
    tls: bool = True
    cert_manager: bool = True
    server_secret: str = "openshell-server-tls"
    client_ca_secret: str | None = "openshell-ca"
    client_ca_key: str = "ca.crt"
    client_auth: str | None = "optional"
    crls: list = field(default_factory=list)
    reload: bool = True
    # The chart's full name: cert-manager's Secrets are named after it.
    fullname: str = RELEASE
    network_policy: bool = False
    # The external certificate: its issuerRef and dnsNames (None: none).
    issuer: dict | None = None
    external_names: list | None = None
    # The OpenShift Route: its host and insecureEdgeTerminationPolicy (None: no Route).
    route_host: str | None = None
    route_insecure: str = "None"
    # Extra (name, predicate(objects, args)) checks.
    extra: list = field(default_factory=list)


@dataclass
class Failing:
    name: str
    helm_args: list
    message: str


def go_duration_seconds(text):
    """Seconds in a Go duration such as 1h, 55m, 1h30m, 200ms."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def parse_args_list(args):
    """{flag: [values]} for --flag=value args; switches map to [None]."""
    out = {}
    bad = []
    for a in args:
        if not a.startswith("--"):
            bad.append(a)
            continue
        flag, eq, value = a.partition("=")
        if flag in VALUE_FLAGS and eq and value:
            out.setdefault(flag, []).append(value)
        elif flag in SWITCHES and not eq:
            out.setdefault(flag, []).append(None)
        else:
            bad.append(a)
    return out, bad


def only(flags, flag):
    values = flags.get(flag, [])
    return values[0] if len(values) == 1 else None


def port_of(bind):
    return int(bind.rsplit(":", 1)[1]) if bind and ":" in bind else None


def walk(node, path=""):
    """Yields (path, key, value) for every mapping entry in a nested object."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def check_case(t, helm, chart, case):
    c = case.name
    lint = run([helm, "lint", "--strict", "--namespace", NAMESPACE, str(chart), *case.helm_args])
    t.check(c, "helm lint --strict", lint.returncode == 0, (lint.stdout + lint.stderr).strip()[-800:])
    r = run([helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *case.helm_args])
    if not t.check(c, "helm template renders", r.returncode == 0, r.stderr.strip()[-800:]):
        return
    text = r.stdout
    objs = [o for o in yaml.safe_load_all(text) if o]
    # Comments may say why subPath is not used; no YAML line may use it.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    t.check(c, "rendered YAML has no subPath anywhere", "subPath" not in code,
            "kubelet never updates a subPath mount")

    check_k8s_schemas(t, c, objs)

    workloads = [o for o in objs if o["kind"] in ("StatefulSet", "Deployment")]
    if not t.check(c, f"one {case.kind} with {case.replicas} replica(s)",
                   len(workloads) == 1 and workloads[0]["kind"] == case.kind
                   and workloads[0]["spec"]["replicas"] == case.replicas,
                   [(w["kind"], w["spec"].get("replicas")) for w in workloads]):
        return
    w = workloads[0]
    pod = w["spec"]["template"]["spec"]
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    gw = next((x for x in pod["containers"] if x["name"] == "gateway"), None)
    if not t.check(c, "gateway container present", gw is not None):
        return
    t.check(c, "image is repository:tag or pinned by digest",
            bool(re.match(r"^[^\s:@]+(:\d+)?(/[^\s:@]+)*(:[\w.\-]+)?(@sha256:[a-f0-9]{64})?$", gw["image"])),
            gw["image"])
    t.check(c, "no volumeMount in any container uses subPath/subPathExpr",
            all("subPath" not in m and "subPathExpr" not in m
                for x in containers for m in x.get("volumeMounts", [])))

    flags, bad = parse_args_list(gw.get("args", []))
    t.check(c, "args are only the gateway's flags, in --flag=value form", not bad, bad)
    t.check(c, "no command override (the image ENTRYPOINT runs the gateway)", "command" not in gw)
    bind, health = only(flags, "--bind"), only(flags, "--health-bind")
    t.check(c, f"--bind on port {TLS_PORT}", port_of(bind) == TLS_PORT, bind)
    t.check(c, f"--health-bind on port {HEALTH_PORT}", port_of(health) == HEALTH_PORT, health)
    t.check(c, "gateway TLS port is not the health port",
            port_of(bind) is not None and port_of(bind) != port_of(health))
    cports = {p["name"]: p["containerPort"] for p in gw.get("ports", [])}
    t.check(c, "container ports: gateway=--bind port, health=--health-bind port",
            cports.get("gateway") == port_of(bind) and cports.get("health") == port_of(health), cports)

    def resolve(port):
        return cports.get(port) if isinstance(port, str) else port

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (gw.get(probe) or {}).get("httpGet") or {}
        t.check(c, f"{probe} is httpGet {path} on the plaintext health port {HEALTH_PORT}",
                get.get("path") == path and resolve(get.get("port")) == HEALTH_PORT
                and get.get("scheme", "HTTP") == "HTTP", get)

    psc = pod.get("securityContext") or {}
    sc = gw.get("securityContext") or {}
    t.check(c, f"pod securityContext: runAsNonRoot, runAsUser {NONROOT_UID}, seccomp RuntimeDefault",
            psc.get("runAsNonRoot") is True and psc.get("runAsUser") == NONROOT_UID
            and (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", psc)
    t.check(c, "pod fsGroup lets the non-root gateway read its 0400 key",
            psc.get("fsGroup") == NONROOT_UID, psc.get("fsGroup"))
    t.check(c, "container securityContext: non-root, readOnlyRootFilesystem, no privilege escalation",
            sc.get("runAsNonRoot") is True and sc.get("runAsUser", psc.get("runAsUser")) == NONROOT_UID
            and sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
            and sc.get("privileged", False) is False, sc)
    t.check(c, "container capabilities drop ALL, add none",
            (sc.get("capabilities") or {}).get("drop") == ["ALL"]
            and not (sc.get("capabilities") or {}).get("add"), sc.get("capabilities"))
    t.check(c, "no service links (they would inject OPENSHELL_* variables)",
            pod.get("enableServiceLinks") is False)
    t.check(c, "no service account token mounted", pod.get("automountServiceAccountToken") is False)

    mounts = {m["mountPath"]: m for m in gw.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = mounts.get("/tmp")
    t.check(c, "/tmp is a writable emptyDir",
            tmp is not None and "emptyDir" in volumes.get(tmp["name"], {}) and not tmp.get("readOnly"))

    delay = go_duration_seconds(only(flags, "--shutdown-delay") or "0s")
    grace = go_duration_seconds(only(flags, "--shutdown-grace") or "0s")
    t.check(c, "terminationGracePeriodSeconds exceeds --shutdown-delay + --shutdown-grace",
            pod.get("terminationGracePeriodSeconds", 30) > delay + grace,
            (pod.get("terminationGracePeriodSeconds"), delay, grace))

    services = [o for o in objs if o["kind"] == "Service"]
    main_svc = next((s for s in services if s["spec"].get("clusterIP") != "None"), None)
    if t.check(c, f"Service exposes only the TLS port {TLS_PORT}",
               main_svc is not None and [p["port"] for p in main_svc["spec"]["ports"]] == [TLS_PORT],
               main_svc and main_svc["spec"]["ports"]):
        by_port = {p["port"]: p for p in main_svc["spec"]["ports"]}
        t.check(c, "Service port targets the gateway's TLS container port",
                resolve(by_port[TLS_PORT]["targetPort"]) == port_of(bind), by_port)
        want = "https" if case.tls else "http"
        t.check(c, f"Service TLS port is named {want}", by_port[TLS_PORT]["name"] == want,
                by_port[TLS_PORT]["name"])
        selector = main_svc["spec"]["selector"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        t.check(c, "Service selector matches the pod labels",
                all(labels.get(k) == v for k, v in selector.items()))
    published = [(s["metadata"]["name"], p) for s in services for p in s["spec"]["ports"]
                 if resolve(p.get("targetPort", p["port"])) == port_of(health)]
    t.check(c, "no Service publishes the plaintext health port (probes reach it on the pod)",
            not published, published)
    if case.kind == "StatefulSet":
        headless = next((s for s in services if s["spec"].get("clusterIP") == "None"), None)
        t.check(c, "StatefulSet serviceName is a headless Service",
                headless is not None and w["spec"].get("serviceName") == headless["metadata"]["name"])
    t.check(c, f"every namespaced object is in namespace {NAMESPACE}",
            all(o["metadata"].get("namespace") == NAMESPACE for o in objs if o["kind"] != "ClusterIssuer"))

    tls_mounts = {p: m for p, m in mounts.items() if p.startswith(TLS_DIR)}
    cm_objs = [o for o in objs if o["kind"] in CERT_MANAGER_KINDS]

    if not case.tls:
        t.check(c, "--disable-tls is passed", "--disable-tls" in flags)
        t.check(c, "no --tls-* flag is passed", not (set(flags) & TLS_ONLY_FLAGS), sorted(flags))
        t.check(c, f"nothing is mounted under {TLS_DIR}", not tls_mounts, sorted(tls_mounts))
        t.check(c, "no Secret volumes", not any("secret" in v for v in volumes.values()))
        t.check(c, "no cert-manager resources", not cm_objs, [o["kind"] for o in cm_objs])
    else:
        t.check(c, "--disable-tls is not passed", "--disable-tls" not in flags)
        expected_dirs = {SERVER_DIR} | ({CLIENT_CA_DIR} if case.client_ca_secret else set()) \
            | ({CRL_DIR} if case.crls else set()) | ({EXTERNAL_DIR} if case.external_names else set())
        t.check(c, f"TLS mounts are exactly {sorted(expected_dirs)}",
                set(tls_mounts) == expected_dirs, sorted(tls_mounts))
        t.check(c, "TLS mounts are read-only", all(m.get("readOnly") is True for m in tls_mounts.values()))

        def secret_of(path):
            m = tls_mounts.get(path)
            return (volumes.get(m["name"]) or {}).get("secret") if m else None

        server = secret_of(SERVER_DIR)
        t.check(c, f"{SERVER_DIR} is a whole Secret directory ({case.server_secret})",
                server is not None and server.get("secretName") == case.server_secret
                and "items" not in server, server)
        t.check(c, "server key Secret has defaultMode 0400",
                server is not None and server.get("defaultMode") == 0o400,
                server and server.get("defaultMode"))
        t.check(c, f"--tls-cert={SERVER_DIR}/tls.crt", only(flags, "--tls-cert") == f"{SERVER_DIR}/tls.crt")
        t.check(c, f"--tls-key={SERVER_DIR}/tls.key", only(flags, "--tls-key") == f"{SERVER_DIR}/tls.key")
        external = secret_of(EXTERNAL_DIR)
        if case.external_names:
            want = f"{case.fullname}-external-tls"
            t.check(c, f"{EXTERNAL_DIR} is a whole Secret directory ({want}), mode 0400",
                    external is not None and external.get("secretName") == want
                    and "items" not in external and external.get("defaultMode") == 0o400, external)
            sni = f"{','.join(case.external_names)}={EXTERNAL_DIR}"
            t.check(c, f"--tls-sni={sni}", flags.get("--tls-sni") == [sni], flags.get("--tls-sni"))
        else:
            t.check(c, f"no external certificate: nothing at {EXTERNAL_DIR}, no --tls-sni",
                    external is None and "--tls-sni" not in flags, (external, flags.get("--tls-sni")))
        if case.client_ca_secret:
            ca = secret_of(CLIENT_CA_DIR)
            t.check(c, f"{CLIENT_CA_DIR} is a Secret directory ({case.client_ca_secret}) with only "
                       f"its {case.client_ca_key} key, as ca.crt",
                    ca is not None and ca.get("secretName") == case.client_ca_secret
                    and ca.get("items") == [{"key": case.client_ca_key, "path": "ca.crt"}], ca)
            t.check(c, f"--tls-client-ca={CLIENT_CA_DIR}/ca.crt",
                    only(flags, "--tls-client-ca") == f"{CLIENT_CA_DIR}/ca.crt")
        else:
            t.check(c, "no --tls-client-ca without a client CA", "--tls-client-ca" not in flags)
        t.check(c, "never --tls-client-ca with --tls-client-auth=none (the gateway refuses it)",
                not ("--tls-client-ca" in flags and flags.get("--tls-client-auth") == ["none"]),
                flags.get("--tls-client-auth"))
        t.check(c, "--tls-crl only with --tls-client-ca (CRLs apply to client certificates)",
                "--tls-crl" not in flags or "--tls-client-ca" in flags)
        t.check(c, f"--tls-client-auth is {case.client_auth}",
                flags.get("--tls-client-auth", [None]) == [case.client_auth], flags.get("--tls-client-auth"))
        if case.crls:
            t.check(c, f"one --tls-crl per CRL key, under {CRL_DIR}",
                    flags.get("--tls-crl") == [f"{CRL_DIR}/{k}" for k in case.crls], flags.get("--tls-crl"))
        else:
            t.check(c, "no --tls-crl", "--tls-crl" not in flags)
        # Every path argument names a file inside one of the mounted directories.
        paths = [v for f in ("--tls-cert", "--tls-key", "--tls-client-ca", "--tls-crl")
                 for v in flags.get(f, [])]
        t.check(c, "every TLS path arg lies in a mounted directory",
                all(any(p.startswith(d + "/") and "/" not in p[len(d) + 1:] for d in tls_mounts) for p in paths),
                paths)
        sni_dirs = [v.rpartition("=")[2] for v in flags.get("--tls-sni", [])]
        t.check(c, "every --tls-sni directory is a mounted directory",
                all(d in tls_mounts for d in sni_dirs), sni_dirs)
        if case.reload:
            t.check(c, "hot reload on: debounce and poll passed, no --no-tls-reload",
                    "--no-tls-reload" not in flags and only(flags, "--tls-reload-debounce")
                    and only(flags, "--tls-reload-poll"))
        else:
            t.check(c, "--no-tls-reload passed, no debounce/poll",
                    "--no-tls-reload" in flags and "--tls-reload-debounce" not in flags
                    and "--tls-reload-poll" not in flags)

        if not case.cert_manager:
            t.check(c, "no cert-manager resources", not cm_objs, [o["kind"] for o in cm_objs])
        else:
            check_cert_manager(t, c, objs, case, server)

    check_network_policy(t, c, objs, case, w, port_of(bind), port_of(health))
    check_route(t, c, objs, case, main_svc)

    for name, pred in case.extra:
        try:
            ok, detail = pred(objs, flags), ""
        except Exception as e:  # a broken predicate is a failed check, with the reason
            ok, detail = False, repr(e)
        t.check(c, name, ok, detail)


def check_network_policy(t, c, objs, case, workload, tls_port, health_port):
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    if not case.network_policy:
        t.check(c, "no NetworkPolicy (networkPolicy.enabled=false)", not policies, len(policies))
        return
    if not t.check(c, "one NetworkPolicy", len(policies) == 1, len(policies)):
        return
    spec = policies[0]["spec"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    selector = (spec.get("podSelector") or {}).get("matchLabels") or {}
    t.check(c, "NetworkPolicy selects the gateway pods (and only by their labels)",
            selector and all(labels.get(k) == v for k, v in selector.items())
            and not (spec.get("podSelector") or {}).get("matchExpressions"), selector)
    t.check(c, "NetworkPolicy isolates ingress only", spec.get("policyTypes") == ["Ingress"],
            spec.get("policyTypes"))
    rules = spec.get("ingress") or []
    # A rule without ports admits every port; each rule must name the TLS port only.
    t.check(c, f"every ingress rule admits only TCP port {tls_port} (the TLS port)",
            rules and all(r.get("ports") and all(x.get("port") == tls_port and x.get("protocol", "TCP") == "TCP"
                                                 and "endPort" not in x for x in r["ports"]) for r in rules),
            rules)
    t.check(c, f"no ingress rule admits the health port {health_port}",
            not any(x.get("port") in (health_port, "health") for r in rules for x in r.get("ports") or []))


def names_of(objs):
    """(kind, name) of every object, and every Secret name the objects write or read."""
    objects = {(o["kind"], o["metadata"]["name"]) for o in objs}
    secrets = set()
    for path, key, value in walk(objs):
        if key == "secretName" and isinstance(value, str):
            secrets.add(value)
    return objects, secrets


def check_two_releases(t, helm, chart):
    """Two releases in one namespace: no object or Secret name in common."""
    c = "two releases in one namespace"
    args = ["--set", "podDisruptionBudget.enabled=true", *external_args(),
            *route_args("gateway.example.com")]
    rendered = {}
    for release, fullname in ((RELEASE, RELEASE), ("other", f"other-{RELEASE}")):
        r = run([helm, "template", release, str(chart), "--namespace", NAMESPACE, *args])
        if not t.check(c, f"release {release} renders", r.returncode == 0, r.stderr.strip()[-400:]):
            return
        objs = [o for o in yaml.safe_load_all(r.stdout) if o]
        rendered[release] = (fullname, *names_of(objs))
    (fa, oa, sa), (fb, ob, sb) = rendered.values()
    t.check(c, "no object name in common", not (oa & ob), sorted(oa & ob))
    t.check(c, "no Secret name in common", not (sa & sb), sorted(sa & sb))
    for fullname, objects, secrets in rendered.values():
        t.check(c, f"every Secret of {fullname} is named after it",
                secrets and all(n.startswith(fullname + "-") for n in secrets), sorted(secrets))
        t.check(c, f"every object of {fullname} is named after it",
                all(n == fullname or n.startswith(fullname + "-") for _, n in objects), sorted(objects))


def check_k8s_schemas(t, c, objs):
    try:
        import kubernetes_validate
    except ImportError as e:
        t.check(c, "Kubernetes schema validation available", False, f"{e} (test.sh installs it)")
        return
    core = [o for o in objs if o["kind"] not in CRD_KINDS]
    errors = []
    for version in K8S_VERSIONS:
        for o in core:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except Exception as e:  # ValidationError, SchemaNotFoundError, ...
                errors.append(f"{o['kind']}/{o['metadata']['name']} @ {version}: {getattr(e, 'message', e)}")
    t.check(c, f"{len(core)} core objects valid against the Kubernetes {' and '.join(K8S_VERSIONS)} schemas (strict)",
            not errors, errors[:5])


def check_cert_manager(t, c, objs, case, server_volume):
    issuers = {o["metadata"]["name"]: o for o in objs if o["kind"] in ("Issuer", "ClusterIssuer")}
    certs = [o for o in objs if o["kind"] == "Certificate"]
    self_signed = [n for n, o in issuers.items() if "selfSigned" in o["spec"]]
    t.check(c, "a self-signed Issuer", len(self_signed) == 1, self_signed)
    ca_certs = [x for x in certs if x["spec"].get("isCA") is True]
    if not t.check(c, "one CA Certificate (isCA) from the self-signed Issuer",
                   len(ca_certs) == 1 and self_signed
                   and ca_certs[0]["spec"]["issuerRef"]["name"] == self_signed[0]):
        return
    ca_secret = ca_certs[0]["spec"]["secretName"]
    ca_issuers = [n for n, o in issuers.items() if (o["spec"].get("ca") or {}).get("secretName") == ca_secret]
    if not t.check(c, "a CA Issuer backed by the CA Certificate's Secret", len(ca_issuers) == 1, ca_issuers):
        return
    leafs = {x["spec"]["secretName"]: x for x in certs if not x["spec"].get("isCA")}
    server_secret, client_secret = f"{case.fullname}-server-tls", f"{case.fullname}-client-tls"
    t.check(c, f"CA Certificate writes Secret {case.fullname}-ca", ca_secret == f"{case.fullname}-ca", ca_secret)
    srv = leafs.get(server_secret)
    if t.check(c, f"server Certificate writes Secret {server_secret}", srv is not None, sorted(leafs)):
        s = srv["spec"]
        t.check(c, "server Certificate is issued by the CA Issuer", s["issuerRef"]["name"] == ca_issuers[0])
        svc = next(o for o in objs if o["kind"] == "Service" and o["spec"].get("clusterIP") != "None")
        name = svc["metadata"]["name"]
        want_dns = {name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc",
                    f"{name}.{NAMESPACE}.svc.cluster.local", "localhost"}
        t.check(c, "server dnsNames cover the Service names and localhost",
                want_dns <= set(s.get("dnsNames", [])), sorted(want_dns - set(s.get("dnsNames", []))))
        cn = s.get("commonName")
        t.check(c, "server commonName, if any, is one of its dnsNames",
                cn is None or cn in s.get("dnsNames", []), cn)
        t.check(c, "server ipAddresses include 127.0.0.1", "127.0.0.1" in s.get("ipAddresses", []))
        t.check(c, "server privateKey.rotationPolicy is Always",
                (s.get("privateKey") or {}).get("rotationPolicy") == "Always")
        t.check(c, "server Certificate usages include server auth", "server auth" in s.get("usages", []))
        t.check(c, "the mounted server Secret is the server Certificate's",
                server_volume is not None and server_volume.get("secretName") == s["secretName"])
    cli = leafs.get(client_secret)
    if t.check(c, f"client Certificate writes Secret {client_secret}", cli is not None, sorted(leafs)):
        t.check(c, "client Certificate is a client-auth cert from the CA Issuer",
                "client auth" in cli["spec"].get("usages", [])
                and cli["spec"]["issuerRef"]["name"] == ca_issuers[0])
    check_external_certificate(t, c, leafs, case, ca_issuers[0])
    if case.client_ca_secret:
        t.check(c, "the client CA mounted is a Secret that cert-manager writes",
                case.client_ca_secret in {ca_secret, *leafs}, (case.client_ca_secret, ca_secret))
    for x in certs:
        spec = x["spec"]
        n = x["metadata"]["name"]
        try:
            d = go_duration_seconds(spec.get("duration", "2160h"))
            rb = go_duration_seconds(spec["renewBefore"]) if spec.get("renewBefore") else d / 3
            ok = d >= CM_MIN_DURATION and rb >= CM_MIN_RENEW_BEFORE and rb < d
            detail = (spec.get("duration"), spec.get("renewBefore"))
        except ValueError as e:
            ok, detail = False, str(e)
        t.check(c, f"Certificate {n}: duration/renewBefore within cert-manager's limits", ok, detail)
        t.check(c, f"Certificate {n}: commonName within cert-manager's {CM_MAX_COMMON_NAME} characters",
                len(spec.get("commonName") or "") <= CM_MAX_COMMON_NAME, spec.get("commonName"))
        bad_dns = [d for d in spec.get("dnsNames", [])
                   if len(d) > 253 or any(len(label) > 63 for label in d.split("."))]
        t.check(c, f"Certificate {n}: dnsNames are valid DNS names (labels <= 63, name <= 253)",
                not bad_dns, bad_dns)


def check_external_certificate(t, c, leafs, case, ca_issuer):
    """The external Certificate: from certManager.serverIssuerRef, for the external names only."""
    secret = f"{case.fullname}-external-tls"
    ext = leafs.get(secret)
    if not case.external_names:
        t.check(c, f"no external Certificate (no Secret {secret})", ext is None)
        return
    if not t.check(c, f"external Certificate {case.fullname}-external writes Secret {secret}",
                   ext is not None and ext["metadata"]["name"] == f"{case.fullname}-external", sorted(leafs)):
        return
    s = ext["spec"]
    t.check(c, f"external Certificate's issuerRef is {case.issuer}", s.get("issuerRef") == case.issuer,
            s.get("issuerRef"))
    t.check(c, "external Certificate is not issued by the chart's CA Issuer",
            s["issuerRef"]["name"] != ca_issuer or s["issuerRef"]["kind"] != "Issuer")
    t.check(c, f"external Certificate's dnsNames are exactly {case.external_names}",
            s.get("dnsNames") == case.external_names and not s.get("ipAddresses"), s.get("dnsNames"))
    t.check(c, "external Certificate has no commonName (an ACME CA reads dnsNames)", "commonName" not in s)
    t.check(c, "external privateKey.rotationPolicy is Always",
            (s.get("privateKey") or {}).get("rotationPolicy") == "Always")
    internal = leafs.get(f"{case.fullname}-server-tls")
    internal_names = set((internal or {}).get("spec", {}).get("dnsNames", []))
    t.check(c, "the internal server Certificate (chart CA) keeps its names and none of the external ones",
            internal is not None and internal["spec"]["issuerRef"]["name"] == ca_issuer
            and "localhost" in internal_names and not (internal_names & set(case.external_names)),
            sorted(internal_names))


def check_route(t, c, objs, case, service):
    routes = [o for o in objs if o["kind"] == "Route"]
    if not case.route_host:
        t.check(c, "no Route (openshiftRoute.enabled=false)", not routes, len(routes))
        return
    if not t.check(c, "one Route, route.openshift.io/v1",
                   len(routes) == 1 and routes[0]["apiVersion"] == "route.openshift.io/v1", len(routes)):
        return
    spec = routes[0]["spec"]
    t.check(c, f"Route host is {case.route_host}", spec.get("host") == case.route_host, spec.get("host"))
    t.check(c, "Route host is an external name or under one of its wildcards",
            case.route_host in case.external_names
            or "*." + case.route_host.partition(".")[2] in case.external_names)
    t.check(c, "Route targets the Service by kind and name",
            spec.get("to") == {"kind": "Service", "name": service["metadata"]["name"], "weight": 100}, spec.get("to"))
    tls_port = next((p for p in service["spec"]["ports"] if p["port"] == TLS_PORT), {})
    t.check(c, f"Route targets the Service's TLS port ({tls_port.get('name')})",
            (spec.get("port") or {}).get("targetPort") in (tls_port.get("name"), tls_port.get("port"))
            and tls_port.get("name") == "https", spec.get("port"))
    tls = spec.get("tls") or {}
    t.check(c, "Route TLS is passthrough (the gateway terminates TLS)",
            tls.get("termination") == "passthrough" and not {"certificate", "key", "caCertificate",
                                                             "destinationCACertificate"} & set(tls), tls)
    t.check(c, f"Route insecureEdgeTerminationPolicy is {case.route_insecure}",
            tls.get("insecureEdgeTerminationPolicy") == case.route_insecure, tls)
    t.check(c, "Route wildcardPolicy is None", spec.get("wildcardPolicy") == "None", spec.get("wildcardPolicy"))


def check_failing(t, helm, chart, case):
    r = run([helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *case.helm_args])
    t.check(case.name, f"render is refused, naming {case.message!r}",
            r.returncode != 0 and case.message in r.stderr, (r.returncode, r.stderr.strip()[-400:]))


def flatten(values, prefix=""):
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from flatten(v, key + ".")
        else:
            yield key, v


def check_readme(t, chart):
    values = yaml.safe_load((chart / "values.yaml").read_text())
    readme = (chart / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", readme, re.M))
    missing, wrong = [], []
    for key, default in flatten(values):
        if key not in rows:
            missing.append(key)
        elif rows[key] != json.dumps(default, ensure_ascii=False):
            wrong.append((key, rows[key], json.dumps(default)))
    keys = dict(flatten(values))
    t.check("README", "chart README lists every value", not missing, missing)
    t.check("README", "chart README defaults match values.yaml", not wrong, wrong)
    t.check("README", "chart README lists no value that does not exist",
            not (set(rows) - set(keys)), sorted(set(rows) - set(keys)))


def external_args(names=None, issuer=None):
    """helm args for an external certificate: issuerRef fields and the names (as JSON: no comma splitting)."""
    args = []
    for key, value in (ISSUER if issuer is None else issuer).items():
        args += ["--set", f"certManager.serverIssuerRef.{key}={value}"]
    return args + ["--set-json", f"certManager.externalDnsNames={json.dumps(EXTERNAL_NAMES if names is None else names)}"]


def route_args(host, insecure=None):
    args = ["--set", "openshiftRoute.enabled=true", "--set", f"openshiftRoute.host={host}"]
    return args + (["--set", f"openshiftRoute.insecureEdgeTerminationPolicy={insecure}"] if insecure else [])


# The NetworkPolicy peer that admits the OpenShift routers.
ROUTER_PEER = {"namespaceSelector": {"matchLabels": {"policy-group.network.openshift.io/ingress": ""}},
               "podSelector": {}}


def cases(chart):
    ci = chart / "ci"

    def arg_value(flags, flag):
        return only(flags, flag)

    def cert(objs, secret):
        return next(o for o in objs if o["kind"] == "Certificate" and o["spec"]["secretName"] == secret)

    long_name = "gateway-" + "x" * 52  # 60 characters: <name>.<namespace>.svc is 74

    def server_cert(objs):
        return next(o for o in objs if o["kind"] == "Certificate" and o["metadata"]["name"].endswith("-server"))

    def policy_from(objs):
        return [r.get("from") for x in objs if x["kind"] == "NetworkPolicy" for r in x["spec"]["ingress"]]

    clients = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "clients"}}}
    one_name = ["gateway.example.com"]
    return [
        Case("default", [], extra=[
            ("--shutdown-delay=5s by default", lambda o, f: arg_value(f, "--shutdown-delay") == "5s"),
            ("server commonName is <fullname>.<namespace>.svc when it fits",
             lambda o, f: server_cert(o)["spec"]["commonName"] == f"{RELEASE}.{NAMESPACE}.svc"),
        ]),
        Case("client-auth-none-with-the-default-client-ca", ["--set", "server.tls.clientAuth=none"],
             client_ca_secret=None, client_auth=None),
        Case("bring-your-own-server-secret-client-auth-none",
             ["--set", "certManager.enabled=false", "--set", "server.tls.existingSecret=gateway-tls",
              "--set", "server.tls.clientAuth=none"],
             cert_manager=False, server_secret="gateway-tls", client_ca_secret=None, client_auth=None),
        Case("long-fullname", ["--set", f"fullnameOverride={long_name}"], fullname=long_name,
             server_secret=f"{long_name}-server-tls", client_ca_secret=f"{long_name}-ca", extra=[
                 ("server commonName falls back to a shorter Service name",
                  lambda o, f: server_cert(o)["spec"]["commonName"] == long_name),
                 ("server dnsNames still carry <fullname>.<namespace>.svc",
                  lambda o, f: f"{long_name}.{NAMESPACE}.svc" in server_cert(o)["spec"]["dnsNames"]),
             ]),
        Case("network-policy", ["--set", "networkPolicy.enabled=true"], network_policy=True, extra=[
            ("no from: the TLS port is open to any source",
             lambda o, f: all("from" not in r for x in o if x["kind"] == "NetworkPolicy"
                              for r in x["spec"]["ingress"])),
        ]),
        Case("network-policy-from-a-namespace",
             ["--set", "networkPolicy.enabled=true",
              "--set-json", 'networkPolicy.from=[{"namespaceSelector":{"matchLabels":'
                            '{"kubernetes.io/metadata.name":"clients"}}}]'],
             network_policy=True, extra=[
                 ("the ingress rule's from is networkPolicy.from",
                  lambda o, f: [r.get("from") for x in o if x["kind"] == "NetworkPolicy" for r in x["spec"]["ingress"]]
                  == [[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "clients"}}}]]),
             ]),
        Case("ci/values-skaffold.yaml", ["-f", str(ci / "values-skaffold.yaml")], extra=[
            ("image from values (skaffold sets repository and tag)",
             lambda o, f: next(x for x in o if x["kind"] == "StatefulSet")["spec"]["template"]["spec"]
             ["containers"][0]["image"] == "openshell-gateway:dev"),
        ]),
        Case("ci/values-reload-test.yaml",
             ["-f", str(ci / "values-skaffold.yaml"), "-f", str(ci / "values-reload-test.yaml")],
             client_auth="required", extra=[
                 ("server cert lives 1h and renews 55m before expiry",
                  lambda o, f: (cert(o, "openshell-server-tls")["spec"]["duration"],
                                cert(o, "openshell-server-tls")["spec"]["renewBefore"]) == ("1h", "55m")),
                 ("debounce is below 1s",
                  lambda o, f: go_duration_seconds(arg_value(f, "--tls-reload-debounce")) < 1),
             ]),
        Case("ci/values-reload-test.yaml alone", ["-f", str(ci / "values-reload-test.yaml")],
             client_auth="required"),
        Case("bring-your-own-secrets",
             ["--set", "certManager.enabled=false",
              "--set", "server.tls.existingSecret=gateway-tls",
              "--set", "server.tls.clientCa.existingSecret=partner-ca",
              "--set", "server.tls.clientCa.key=bundle.pem",
              "--set", "server.tls.clientAuth=required"],
             cert_manager=False, server_secret="gateway-tls", client_ca_secret="partner-ca",
             client_ca_key="bundle.pem", client_auth="required"),
        Case("bring-your-own-server-secret-without-client-ca",
             ["--set", "certManager.enabled=false", "--set", "server.tls.existingSecret=gateway-tls",
              "--set", "server.tls.clientCa.enabled=false", "--set", "server.tls.clientAuth=none"],
             cert_manager=False, server_secret="gateway-tls", client_ca_secret=None, client_auth=None),
        Case("cert-manager-server-secret-as-client-ca",
             ["--set", "server.tls.clientCa.existingSecret=openshell-server-tls"],
             client_ca_secret="openshell-server-tls", extra=[
                 ("cert-manager objects still render", lambda o, f: any(x["kind"] == "Certificate" for x in o)),
             ]),
        Case("disable-tls", ["--set", "server.disableTls=true"], tls=False, cert_manager=False,
             client_ca_secret=None, client_auth=None),
        Case("disable-tls-without-cert-manager",
             ["--set", "server.disableTls=true", "--set", "certManager.enabled=false"],
             tls=False, cert_manager=False, client_ca_secret=None, client_auth=None),
        Case("deployment-with-crls-and-no-reload",
             ["--set", "workload.kind=Deployment", "--set", "replicaCount=3",
              "--set", "server.tls.crl.existingSecret=gateway-crl",
              "--set", "server.tls.crl.keys={root.crl,intermediate.crl}",
              "--set", "server.tls.reload.enabled=false",
              "--set", "podDisruptionBudget.enabled=true"],
             kind="Deployment", replicas=3, crls=["root.crl", "intermediate.crl"], reload=False, extra=[
                 ("no headless Service for a Deployment",
                  lambda o, f: not any(x["kind"] == "Service" and x["spec"].get("clusterIP") == "None" for x in o)),
                 ("a PodDisruptionBudget", lambda o, f: any(x["kind"] == "PodDisruptionBudget" for x in o)),
             ]),
        Case("external-certificate-from-a-cluster-issuer", external_args(),
             issuer=ISSUER, external_names=EXTERNAL_NAMES),
        Case("external-certificate-from-an-issuer-group-defaulted",
             external_args(one_name, {"kind": "Issuer", "name": "corporate-ca"}),
             issuer={"name": "corporate-ca", "kind": "Issuer", "group": "cert-manager.io"},
             external_names=one_name),
        Case("external-certificate-on-a-deployment-with-an-out-of-tree-issuer",
             ["--set", "workload.kind=Deployment",
              *external_args(one_name, {"kind": "ClusterIssuer", "name": "pca", "group": "awspca.cert-manager.io"})],
             kind="Deployment", issuer={"kind": "ClusterIssuer", "name": "pca", "group": "awspca.cert-manager.io"},
             external_names=one_name),
        Case("openshift-route-on-an-external-name", [*external_args(), *route_args("gateway.example.com")],
             issuer=ISSUER, external_names=EXTERNAL_NAMES, route_host="gateway.example.com"),
        Case("openshift-route-under-an-external-wildcard-redirect",
             [*external_args(), *route_args("gw.apps.example.com", "Redirect")],
             issuer=ISSUER, external_names=EXTERNAL_NAMES, route_host="gw.apps.example.com",
             route_insecure="Redirect"),
        Case("openshift-route-with-a-network-policy-open-to-all",
             [*external_args(), *route_args("gateway.example.com"), "--set", "networkPolicy.enabled=true"],
             issuer=ISSUER, external_names=EXTERNAL_NAMES, route_host="gateway.example.com",
             network_policy=True, extra=[
                 ("no from: the routers are admitted like any source", lambda o, f: policy_from(o) == [None]),
             ]),
        Case("ci/values-external-tls.yaml",
             ["-f", str(ci / "values-skaffold.yaml"), "-f", str(ci / "values-external-tls.yaml")],
             issuer=ISSUER, external_names=one_name, route_host="gateway.example.com", network_policy=True,
             extra=[
                 ("the routers are added to networkPolicy.from", lambda o, f: policy_from(o) == [[clients, ROUTER_PEER]]),
             ]),
        Case("ipv6-bind-and-age-grace",
             ["--set", "server.bindAddress=::", "--set", "server.maxConnectionAgeGrace=45s"], extra=[
                 ("IPv6 bind address is bracketed", lambda o, f: arg_value(f, "--bind") == "[::]:8080"),
                 ("--max-connection-age-grace passed when set",
                  lambda o, f: arg_value(f, "--max-connection-age-grace") == "45s"),
             ]),
    ]


def failing_cases():
    return [
        Failing("fail: cert-manager off, no server Secret", ["--set", "certManager.enabled=false"],
                "server.tls.existingSecret is required"),
        Failing("fail: cert-manager off, no client CA Secret",
                ["--set", "certManager.enabled=false", "--set", "server.tls.existingSecret=gateway-tls"],
                "server.tls.clientCa.existingSecret is required"),
        Failing("fail: client auth required without a client CA",
                ["--set", "server.tls.clientCa.enabled=false", "--set", "server.tls.clientAuth=required"],
                "server.tls.clientAuth=required needs a client CA"),
        Failing("fail: health port equals TLS port", ["--set", "server.healthPort=8080"],
                "server.healthPort (8080) must differ from server.port"),
        Failing("fail: CRL keys without a Secret", ["--set", "server.tls.crl.keys={root.crl}"],
                "server.tls.crl.keys needs server.tls.crl.existingSecret"),
        Failing("fail: unknown client-auth mode", ["--set", "server.tls.clientAuth=sometimes"],
                "clientAuth"),
        Failing("fail: CRL keys with client auth none",
                ["--set", "server.tls.crl.existingSecret=gateway-crl", "--set", "server.tls.crl.keys={root.crl}",
                 "--set", "server.tls.clientAuth=none"],
                "server.tls.crl.keys needs a client CA"),
        Failing("fail: grace period not above shutdown delay + grace",
                ["--set", "terminationGracePeriodSeconds=35"],
                "terminationGracePeriodSeconds (35) must exceed server.shutdownDelay + server.shutdownGrace (35s)"),
        Failing("fail: a long shutdown delay (1m30s) outlasts the grace period",
                ["--set", "server.shutdownDelay=1m30s", "--set", "server.shutdownGrace=500ms"],
                "must exceed server.shutdownDelay + server.shutdownGrace (90.5s)"),
        Failing("fail: the health port has no Service port", ["--set", "service.healthPort=8081"], "healthPort"),
        Failing("fail: misspelt value", ["--set", "server.disableTLS=true"], "disableTLS"),
        Failing("fail: unknown workload kind", ["--set", "workload.kind=DaemonSet"], "kind"),
        *[Failing(f"fail: external name {name} ({what})", external_args([name]),
                  f'certManager.externalDnsNames: "{name}" is {what}, which an external issuer cannot certify')
          for name, what in (("gateway.openshell.svc", "a cluster-internal name"),
                             ("*.openshell-headless.openshell.svc", "a cluster-internal name"),
                             ("gateway.openshell.svc.cluster.local", "a cluster-internal name"),
                             ("gateway.cluster.local", "a cluster-internal name"),
                             ("localhost", "a loopback name"),
                             ("203.0.113.7", "an IPv4 address"),
                             ("2001:db8::1", "an IPv6 address"),
                             ("openshell", "a single-label name (a Service's short name)"))],
        Failing("fail: external name under a custom cluster domain",
                ["--set", "certManager.clusterDomain=k8s.internal", *external_args(["gateway.openshell.k8s.internal"])],
                '"gateway.openshell.k8s.internal" is a cluster-internal name'),
        Failing("fail: one internal name among public ones", external_args(["gateway.example.com", "10.0.0.1"]),
                '"10.0.0.1" is an IPv4 address'),
        Failing("fail: external issuer without names", external_args([]),
                "certManager.serverIssuerRef needs certManager.externalDnsNames"),
        Failing("fail: external names without an issuer", external_args(issuer={}),
                "certManager.externalDnsNames needs certManager.serverIssuerRef"),
        Failing("fail: external issuer with TLS off", [*external_args(), "--set", "server.disableTls=true"],
                "certManager.serverIssuerRef needs certManager.enabled=true and TLS on"),
        Failing("fail: external issuer with cert-manager off",
                [*external_args(), "--set", "certManager.enabled=false", "--set", "server.tls.existingSecret=gw-tls",
                 "--set", "server.tls.clientAuth=none"],
                "certManager.serverIssuerRef needs certManager.enabled=true and TLS on"),
        Failing("fail: issuer kind neither Issuer nor ClusterIssuer",
                external_args(issuer={"kind": "Vault", "name": "vault"}), "serverIssuerRef/kind"),
        Failing("fail: issuer without a name", external_args(issuer={"kind": "ClusterIssuer"}),
                "missing property 'name'"),
        Failing("fail: an external name with a comma (it would split --tls-sni)",
                external_args(["a.example.com,b.example.com"]), "externalDnsNames/0"),
        Failing("fail: Route host not among the external names",
                [*external_args(), *route_args("other.example.com")],
                'openshiftRoute.host "other.example.com" must be one of certManager.externalDnsNames'),
        Failing("fail: Route host two labels under a wildcard",
                [*external_args(), *route_args("a.b.apps.example.com")],
                'openshiftRoute.host "a.b.apps.example.com" must be one of certManager.externalDnsNames'),
        Failing("fail: Route without external names", route_args("gateway.example.com"),
                'openshiftRoute.host "gateway.example.com" must be one of certManager.externalDnsNames ()'),
        Failing("fail: Route host is a wildcard", [*external_args(), *route_args("*.apps.example.com")],
                'openshiftRoute.host "*.apps.example.com" is a wildcard'),
        Failing("fail: Route without a host", [*external_args(), "--set", "openshiftRoute.enabled=true"],
                "openshiftRoute.host is required when openshiftRoute.enabled=true"),
        Failing("fail: Route with an edge policy passthrough refuses",
                [*external_args(), *route_args("gateway.example.com", "Allow")], "insecureEdgeTerminationPolicy"),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True, type=Path)
    opts = ap.parse_args()
    t = Tally()
    for case in cases(opts.chart):
        check_case(t, opts.helm, opts.chart, case)
    for case in failing_cases():
        check_failing(t, opts.helm, opts.chart, case)
    check_two_releases(t, opts.helm, opts.chart)
    check_readme(t, opts.chart)
    print(f"chart-checks: {t.passed} passed, {t.failed} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
