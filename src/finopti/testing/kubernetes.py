"""The Helm chart's mesh on one machine, for tests: what `helm template` renders, run without a cluster.

What is the chart's, unchanged: each pod's environment (from its Deployment), the certificates cert-manager would
issue (from the chart's Certificate resources: the same issuers, common names, DNS names, SPIFFE ids, usages),
each pod's `/pki` directory as its projected volume builds it, OPA's files (from the ConfigMap), the services' own
health probe, and the gateway's configuration (the chart's renderer for a Kubernetes site). What stands in for the
cluster: every pod listens on a loopback port, the gateway's name is `localhost` (no cluster DNS here), and the
policy service serves OPA's REST API in OPA's place, as in the compose harness. The gateway runs as `replicas`
APISIX instances in front of the same pods, as the Deployment's replicas are; when a route APISIX serves is rate
limited, their counters live in one Redis-protocol store (`finopti.testing.apisix_store`), as the chart's do.
"""

import dataclasses
import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from finopti.deploy import helm
from finopti.deploy.apisix import (
    CERT_ENV,
    JWT_KEY_ENV,
    KEY_ENV,
    apisix_yaml_text,
    dump_yaml,
    render_apisix_yaml,
    render_config_yaml,
)
from finopti.deploy.kube_workloads import MESH_CA_ENV, PKI_DIR
from finopti.deploy.kubernetes import kubernetes_site
from finopti.deploy.topology import ENGINES, plan
from finopti.idp import DevIdentityProvider
from finopti.mesh.model import MeshSpec
from finopti.mesh.resolved import resolve
from finopti.ports import free_port
from finopti.testing.apisix import ApisixInstance, _answers, _run_service, _terminate, _wait, short_tempdir
from finopti.testing.apisix_store import CounterStore

LOOPBACK = "127.0.0.1"
GATEWAY_NAME = "localhost"  # the gateway's Service name in the cluster (`apisix`); no cluster DNS here
START_TIMEOUT = 60.0
USAGES = {"server auth": ExtendedKeyUsageOID.SERVER_AUTH, "client auth": ExtendedKeyUsageOID.CLIENT_AUTH}


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertManager:
    """Issues what the chart's Certificate resources ask for, as cert-manager's self-signed and CA issuers would,
    into one directory per Secret (`tls.crt`, `tls.key`, `ca.crt`). `extra_names`: DNS names added to a Secret's
    certificate (here the gateway is reached as `localhost`, in the cluster as `apisix`)."""

    def __init__(self, docs: list[dict], root: Path, extra_names: dict[str, list[str]] | None = None):
        self.root = root
        self.extra_names = extra_names or {}
        self.certificates = {d["spec"]["secretName"]: d["spec"] for d in docs if d["kind"] == "Certificate"}
        self.issuers = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Issuer"}
        self._signers: dict[str, tuple[x509.Certificate, object]] = {}
        for secret in self.certificates:
            self._issue(secret)

    def secret(self, name: str) -> Path:
        return self.root / name

    def _signer(self, issuer: str) -> tuple[x509.Certificate, object] | None:
        spec = self.issuers[issuer]
        if "selfSigned" in spec:
            return None
        secret = spec["ca"]["secretName"]
        if secret not in self._signers:
            self._issue(secret)
        return self._signers[secret]

    def _issue(self, secret: str) -> None:
        if (self.root / secret / "tls.crt").exists():
            return
        spec = self.certificates[secret]
        signer = self._signer(spec["issuerRef"]["name"])
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec["commonName"])])
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        builder = (x509.CertificateBuilder().subject_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + dt.timedelta(days=2)))
        if spec.get("isCA"):
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        else:
            sans = [x509.DNSName(n) for n in [*spec.get("dnsNames", []), *self.extra_names.get(secret, [])]]
            sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.get("ipAddresses", [])]
            sans += [x509.UniformResourceIdentifier(u) for u in spec.get("uris", [])]
            builder = (builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
                       .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                       .add_extension(x509.ExtendedKeyUsage([USAGES[u] for u in spec["usages"] if u in USAGES]),
                                      critical=False))
        if signer is None:
            cert = builder.issuer_name(name).sign(key, hashes.SHA256())
            ca = cert
        else:
            ca, ca_key = signer
            cert = builder.issuer_name(ca.subject).sign(ca_key, hashes.SHA256())
        directory = self.root / secret
        directory.mkdir(parents=True)
        (directory / "tls.crt").write_bytes(_pem(cert))
        (directory / "tls.key").write_bytes(_key_pem(key))
        os.chmod(directory / "tls.key", 0o600)
        (directory / "ca.crt").write_bytes(_pem(ca))
        if spec.get("isCA"):
            self._signers[secret] = (cert, key)


def projected_pki(volume: dict, secrets: CertManager, target: Path) -> Path:
    """A pod's `pki` projected volume as the kubelet writes it: the selected keys of each Secret."""
    target.mkdir(parents=True, exist_ok=True)
    for source in volume["projected"]["sources"]:
        secret = secrets.secret(source["secret"]["name"])
        for item in source["secret"]["items"]:
            shutil.copyfile(secret / item["key"], target / item["path"])
    os.chmod(target / "tls.key", 0o600) if (target / "tls.key").exists() else None
    return target


@dataclasses.dataclass
class Pod:
    name: str
    service: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None


class KubePlatform:
    """The chart rendered by Helm, and some of its pods started on loopback. `start()` / `stop()`."""

    def __init__(self, spec: MeshSpec, chart: Path, runtime: Path, root: Path | None = None, replicas: int = 1):
        self.spec = spec
        self.chart = chart
        self.runtime = runtime
        self.root = root or short_tempdir("kub-")
        self.idp = DevIdentityProvider(self.root / "idp", spec.identity)
        self.pods: dict[str, Pod] = {}
        self.gateways = [ApisixInstance(runtime, self.root / f"gw{i or ''}", {}) for i in range(replicas)]
        self.replica_ports = [{name: free_port() for name in ("edge", "mesh", "ready", "status", "export")}
                              for _ in range(replicas)]
        self.gateway, self.ports = self.gateways[0], self.replica_ports[0]
        self.store: CounterStore | None = None

    @property
    def edge(self) -> str:
        return self.edge_of(0)

    def edge_of(self, replica: int) -> str:
        return f"http://{LOOPBACK}:{self.replica_ports[replica]['edge']}"

    @property
    def mesh_url(self) -> str:
        return f"https://{GATEWAY_NAME}:{self.ports['mesh']}"

    def render(self) -> list[dict]:
        self.idp.ensure()
        public = serialization.load_pem_private_key(self.idp.key_path.read_bytes(), None).public_key()
        self.public_key = public.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return helm.template(self.chart, {"identity": {"publicKey": self.public_key},
                                          "grafana": {"adminPassword": "test"}})

    def start(self, only: set[str]) -> "KubePlatform":
        """The gateway, OPA's stand-in and the service versions named in `only` (e.g. {"orchestrator-v1"})."""
        try:
            self.docs = self.render()
            self.secrets = CertManager(self.docs, self.root / "secrets", {"finopti-gateway-tls": [GATEWAY_NAME]})
            self.nodes = {b.name: free_port() for b in plan(self.spec).backends}
            self.nodes[ENGINES["policy"].container] = free_port()
            self._start_policy()
            for name in sorted(only):
                self._start_pod(name)
            for pod in self.pods.values():
                _wait(lambda p=pod: self.probe(p.name), f"{pod.name} not healthy (log: {pod.log})", START_TIMEOUT)
            if kubernetes_site(resolve(self.spec), plan(self.spec)).rate_limit_store is not None:
                self.store = CounterStore(self.root / "store").start()
            for replica in range(len(self.gateways)):
                self._start_gateway(replica)
        except BaseException:
            self.stop()
            raise
        return self

    def deployment(self, name: str) -> dict:
        return next(d for d in self.docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)

    def pki_dir(self, name: str) -> Path:
        return self.root / "pods" / name / "pki"

    def _local(self, value: str, name: str) -> str:
        return value.replace(PKI_DIR + "/", str(self.pki_dir(name)) + "/")

    def _start_pod(self, name: str) -> None:
        spec = self.deployment(name)["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        volume = next(v for v in spec["volumes"] if v["name"] == "pki")
        projected_pki(volume, self.secrets, self.pki_dir(name))
        env = {e["name"]: self._local(e["value"], name) for e in container["env"]}
        env.update({"FINOPTI_HOST": LOOPBACK, "FINOPTI_PORT": str(self.nodes[name]), "FINOPTI_MESH_URL": self.mesh_url,
                    "FINOPTI_HOME": str(self.root / "pods" / name / "state")})
        self._spawn(name, env["FINOPTI_SERVICE"], env)

    def _start_policy(self) -> None:
        opa = next(d for d in self.docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "opa-policies")
        policies = self.root / "opa"
        policies.mkdir(exist_ok=True)
        for file, text in opa["data"].items():
            (policies / file).write_text(text)
        engine = ENGINES["policy"]
        self._spawn(engine.container, "policy", {
            "FINOPTI_SERVICE": "policy", "FINOPTI_VERSION": "v1", "FINOPTI_HOST": LOOPBACK,
            "FINOPTI_PORT": str(self.nodes[engine.container]), "FINOPTI_HOME": str(self.root / "pods" / "opa"),
            "FINOPTI_ENTRYPOINT": self.spec.service("policy").entrypoint, "FINOPTI_POLICY_DIR": str(policies)})

    def _spawn(self, name: str, service: str, env: dict[str, str]) -> None:
        Path(env["FINOPTI_HOME"]).mkdir(parents=True, exist_ok=True)
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        full = {k: v for k, v in os.environ.items() if not k.startswith("FINOPTI_")}
        full.update({**env, "PYTHONUNBUFFERED": "1"})
        pod = Pod(name, service, int(env["FINOPTI_PORT"]), full, log)
        pod.process = _run_service(full, log)
        self.pods[name] = pod

    def probe(self, name: str) -> bool:
        """The pod's own readiness probe (the chart's command, in its environment)."""
        pod = self.pods[name]
        if pod.process.poll() is not None:
            raise RuntimeError(f"{name} exited ({pod.process.returncode}): {pod.log.read_text()[-2000:]}")
        if name == ENGINES["policy"].container:
            return _answers(f"http://{LOOPBACK}:{pod.port}{self.spec.service('policy').health}")
        command = self.deployment(name)["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"][
            "command"]
        command = [sys.executable if part == "python" else part for part in command]
        return subprocess.run(command, env=pod.env, capture_output=True, timeout=10).returncode == 0

    def site(self, replica: int = 0):
        mesh = resolve(self.spec)
        site = kubernetes_site(mesh, plan(self.spec))
        ports = self.replica_ports[replica]
        return mesh, dataclasses.replace(
            site,
            listen={name: (LOOPBACK, ports[name]) for name in ("edge", "mesh", "ready")},
            status=(LOOPBACK, ports["status"]), export=(LOOPBACK, ports["export"]),
            nodes={name: (LOOPBACK, port) for name, port in self.nodes.items()},
            ca_file=str(self.pki_dir("apisix") / "mesh-ca.crt"),
            opa_url=f"http://{LOOPBACK}:{self.nodes[ENGINES['policy'].container]}",
            caller_certificates=dataclasses.replace(site.caller_certificates, snis=(GATEWAY_NAME,)),
            rate_limit_store=self.store.address if site.rate_limit_store and self.store else site.rate_limit_store,
        )

    def _start_gateway(self, replica: int = 0) -> None:
        spec = self.deployment("apisix")["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "pki")
        pki = projected_pki(volume, self.secrets, self.pki_dir("apisix"))
        mesh, site = self.site(replica)
        conf = self.root / f"conf{replica or ''}"
        conf.mkdir(exist_ok=True)
        (conf / "config.yaml").write_text(dump_yaml(render_config_yaml(mesh, plan(self.spec), site)))
        (conf / "apisix.yaml").write_text(apisix_yaml_text(render_apisix_yaml(mesh, plan(self.spec), site)))
        gateway = self.gateways[replica]
        gateway.env = {JWT_KEY_ENV: self.public_key, CERT_ENV: (pki / "tls.crt").read_text(),
                       KEY_ENV: (pki / "tls.key").read_text(), MESH_CA_ENV: (pki / "mesh-ca.crt").read_text()}
        gateway.start(conf / "config.yaml", conf / "apisix.yaml")
        status = f"http://{LOOPBACK}:{self.replica_ports[replica]['status']}/status/ready"
        _wait(lambda: _answers(status), f"{status} not 200", START_TIMEOUT)
        if failures := gateway.load_failures():
            raise RuntimeError("APISIX rejected items of the chart's configuration:\n" + "\n".join(failures))

    def client_tls(self, secret: str, trust: str) -> "object":
        """A TLS context with the identity of `secret` (a Certificate's Secret), trusting `trust`'s CA Secret."""
        import ssl

        context = ssl.create_default_context(cafile=str(self.secrets.secret(trust) / "tls.crt"))
        context.load_cert_chain(self.secrets.secret(secret) / "tls.crt", self.secrets.secret(secret) / "tls.key")
        return context

    def mesh_client(self, secret: str) -> httpx.Client:
        """A client that calls the gateway's mesh listener as the identity of `secret`."""
        return httpx.Client(base_url=self.mesh_url, verify=self.client_tls(secret, "finopti-callers-ca"),
                            timeout=30)

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        if self.store is not None:
            self.store.stop()
        for pod in self.pods.values():
            if pod.process is not None:
                _terminate(pod.process, wait=False)
        for pod in self.pods.values():
            if pod.process is not None:
                _terminate(pod.process)
