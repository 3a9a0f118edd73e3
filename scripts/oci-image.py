#!/usr/bin/env python3
"""Writes a single-layer OCI image archive by hand (Python 3 stdlib only).

No Docker engine and no registry: the archive is an OCI image layout in a tar
(oci-layout, index.json, blobs/sha256/...) that `ctr -n k8s.io images import`
loads, named by the index's `io.containerd.image.name` annotation.

    scripts/oci-image.py --spec SPEC.json [--out FILE] [--name NAME]
    scripts/oci-image.py --name localhost/app:dev --out target/image/app.tar \\
        --bin target/release/app:/usr/local/bin/app \\
        --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt \\
        --dir /tmp:1777 --user 65532:65532 --entrypoint '["/usr/local/bin/app"]'

The spec (JSON; command-line flags add to it):

    {
      "name": "localhost/app:dev",           # image name (the containerd annotation)
      "out": "target/image/app.tar",         # relative to the current directory
      "entries": [                           # the layer's content
        {"path": "/usr/local/bin/app", "src": "target/release/app", "mode": "0755",
         "libs": true},                      # libs: add what `ldd src` lists (+ loader)
        {"path": "/etc/passwd", "text": "root:x:0:0::/root:/sbin/nologin\\n"},
        {"path": "/data", "dir": true, "mode": "0755", "uid": 999, "gid": 999},
        {"path": "/bin/app2", "symlink": "/usr/local/bin/app"}
      ],
      "config": {                            # OCI image config "config" (as Docker's)
        "User": "65532:65532", "Entrypoint": ["/usr/local/bin/app"], "Cmd": [],
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "WorkingDir": "/",
        "ExposedPorts": {"8080/tcp": {}}, "Labels": {}
      }
    }

Deterministic: entries sorted by path, parent directories added (0755 root),
every mtime SOURCE_DATE_EPOCH (default 0), numeric owners only, no gzip, JSON
with sorted keys. The same inputs give the same digests. The archive is
rewritten only when the inputs (spec and the bytes of every source file)
change; the input hash is kept in OUT.inputs next to it. Prints the manifest
digest (what `ctr images ls` shows) on stdout.
"""

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time

EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
FORMAT_VERSION = "1"  # bump when the layout written below changes


def die(msg):
    print(f"oci-image: {msg}", file=sys.stderr)
    sys.exit(1)


def ldd(path):
    """The shared libraries (and the dynamic loader) a binary needs, as ldd resolves them."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        die("ldd not found")
    text = out.stdout + out.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if out.returncode != 0:
        die(f"ldd {path} failed: {text.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            die(f"{path}: {line}")
        m = re.match(r"^\S+ => (/\S+) \(0x[0-9a-f]+\)$", line) or re.match(r"^(/\S+) \(0x[0-9a-f]+\)$", line)
        if m:
            libs.append(m.group(1))
    return libs


def expand(spec):
    """Entries -> {path: entry}, with ldd libraries and parent directories added."""
    files = {}

    def add(e):
        p = os.path.normpath("/" + e["path"].lstrip("/"))
        if p == "/":
            return
        e = dict(e, path=p)
        old = files.get(p)
        if old is not None and old != e:
            # An explicit entry wins over a library or implied parent directory.
            if old.get("_implied") and not e.get("_implied"):
                pass
            elif e.get("_implied"):
                return
            else:
                die(f"{p} given twice with different content: {old} / {e}")
        files[p] = e

    for e in spec.get("entries", []):
        if "path" not in e:
            die(f"entry without path: {e}")
        kinds = [k for k in ("src", "text", "dir", "symlink") if k in e]
        if len(kinds) != 1:
            die(f"{e['path']}: exactly one of src, text, dir, symlink expected")
        if "src" in e:
            if not os.path.isfile(e["src"]):
                die(f"{e['path']}: source {e['src']} is not a file")
            if e.get("libs"):
                for lib in ldd(e["src"]):
                    add({"path": lib, "src": os.path.realpath(lib), "mode": "0755", "_implied": True})
        add({k: v for k, v in e.items() if k != "libs"})
    for p in list(files):
        d = os.path.dirname(p)
        while d != "/":
            add({"path": d, "dir": True, "mode": "0755", "_implied": True})
            d = os.path.dirname(d)
    return files


def input_hash(spec, files):
    h = hashlib.sha256()
    h.update(f"oci-image {FORMAT_VERSION} {EPOCH} {ARCH}\n".encode())
    h.update(json.dumps(spec, sort_keys=True).encode())
    for p in sorted(files):
        e = files[p]
        h.update(json.dumps(e, sort_keys=True).encode())
        if "src" in e:
            with open(e["src"], "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def mode_of(e, default):
    m = e.get("mode")
    if m is None:
        return default
    return int(m, 8) if isinstance(m, str) else int(m)


def layer_tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for p in sorted(files):
            e = files[p]
            ti = tarfile.TarInfo(p.lstrip("/"))
            ti.mtime = EPOCH
            ti.uid = int(e.get("uid", 0))
            ti.gid = int(e.get("gid", 0))
            ti.uname = ti.gname = ""
            data = None
            if e.get("dir"):
                ti.type = tarfile.DIRTYPE
                ti.mode = mode_of(e, 0o755)
            elif "symlink" in e:
                ti.type = tarfile.SYMTYPE
                ti.linkname = e["symlink"]
                ti.mode = 0o777
            else:
                if "text" in e:
                    data = e["text"].encode()
                    default = 0o644
                else:
                    with open(e["src"], "rb") as f:
                        data = f.read()
                    default = 0o755 if os.stat(e["src"]).st_mode & 0o111 else 0o644
                ti.type = tarfile.REGTYPE
                ti.mode = mode_of(e, default)
                ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def write_archive(out, name, layer, config):
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
    cfg = {
        "created": created,
        "architecture": ARCH,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        "history": [{"created": created, "created_by": "scripts/oci-image.py"}],
    }
    cfg_b = canon(cfg)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg_b), "size": len(cfg_b)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}],
    }
    man_b = canon(manifest)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(man_b),
            "size": len(man_b),
            "platform": {"architecture": ARCH, "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    }
    members = [
        ("blobs", None),
        ("blobs/sha256", None),
    ]
    blobs = sorted({sha(b)[7:]: b for b in (layer, cfg_b, man_b)}.items())
    members += [(f"blobs/sha256/{d}", b) for d, b in blobs]
    members += [("index.json", canon(index)), ("oci-layout", canon({"imageLayoutVersion": "1.0.0"}))]
    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, data in members:
            ti = tarfile.TarInfo(path)
            ti.mtime = EPOCH
            ti.uname = ti.gname = ""
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            else:
                ti.mode, ti.size = 0o644, len(data)
                tar.addfile(ti, io.BytesIO(data))
    os.replace(tmp, out)
    return sha(man_b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", help="JSON spec file ('-' for stdin)")
    ap.add_argument("--name", help="image name, e.g. localhost/app:dev")
    ap.add_argument("--out", help="archive to write")
    ap.add_argument("--bin", action="append", default=[], metavar="SRC:DEST",
                    help="executable plus the libraries ldd lists")
    ap.add_argument("--file", action="append", default=[], metavar="SRC:DEST[:MODE]")
    ap.add_argument("--dir", action="append", default=[], metavar="DEST[:MODE[:UID:GID]]")
    ap.add_argument("--text", action="append", default=[], metavar="DEST=CONTENT")
    ap.add_argument("--entrypoint", help="JSON list")
    ap.add_argument("--cmd", help="JSON list")
    ap.add_argument("--user")
    ap.add_argument("--workdir")
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]")
    ap.add_argument("--force", action="store_true", help="write even if the inputs did not change")
    a = ap.parse_args()

    spec = {}
    if a.spec:
        spec = json.load(sys.stdin if a.spec == "-" else open(a.spec))
    entries = list(spec.get("entries", []))
    config = dict(spec.get("config", {}))
    for b in a.bin:
        src, dst = b.split(":", 1)
        entries.append({"path": dst, "src": src, "libs": True})
    for f in a.file:
        parts = f.split(":")
        e = {"src": parts[0], "path": parts[1]}
        if len(parts) > 2:
            e["mode"] = parts[2]
        entries.append(e)
    for d in a.dir:
        parts = d.split(":")
        e = {"path": parts[0], "dir": True}
        if len(parts) > 1:
            e["mode"] = parts[1]
        if len(parts) > 3:
            e["uid"], e["gid"] = int(parts[2]), int(parts[3])
        entries.append(e)
    for t in a.text:
        dst, content = t.split("=", 1)
        entries.append({"path": dst, "text": content})
    if a.entrypoint:
        config["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        config["Cmd"] = json.loads(a.cmd)
    if a.user:
        config["User"] = a.user
    if a.workdir:
        config["WorkingDir"] = a.workdir
    if a.env:
        config["Env"] = list(config.get("Env", [])) + a.env
    if a.expose:
        ports = dict(config.get("ExposedPorts", {}))
        for p in a.expose:
            ports[p if "/" in p else p + "/tcp"] = {}
        config["ExposedPorts"] = ports
    spec = dict(spec, entries=entries, config=config)
    name = a.name or spec.get("name")
    out = a.out or spec.get("out")
    if not name or not out:
        die("--name and --out (or name/out in the spec) are required")
    spec["name"] = name
    spec.pop("out", None)
    if not config.get("Entrypoint") and not config.get("Cmd"):
        die("the image needs an Entrypoint or a Cmd")

    files = expand(spec)
    ih = input_hash(spec, files)
    stamp = out + ".inputs"
    digest_file = out + ".digest"
    if not a.force and os.path.exists(out) and os.path.exists(stamp) and os.path.exists(digest_file):
        if open(stamp).read().strip() == ih:
            digest = open(digest_file).read().strip()
            print(f"oci-image: {name}: up to date ({out}, {digest})", file=sys.stderr)
            print(digest)
            return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    layer = layer_tar(files)
    digest = write_archive(out, name, layer, config)
    with open(digest_file, "w") as f:
        f.write(digest + "\n")
    with open(stamp, "w") as f:
        f.write(ih + "\n")
    nfiles = sum(1 for e in files.values() if not e.get("dir"))
    print(f"oci-image: {name}: wrote {out} ({nfiles} files, layer {len(layer) / 1048576:.1f} MiB, {digest})",
          file=sys.stderr)
    print(digest)


if __name__ == "__main__":
    main()
