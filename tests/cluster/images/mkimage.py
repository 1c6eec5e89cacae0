#!/usr/bin/env python3
"""Build a single-layer OCI image archive from a directory, without a registry.

    mkimage.py --name localhost/lameduck/busybox:test --rootfs DIR -o out.tar \
        [--entrypoint '["/bin/sh"]'] [--cmd '["-c","..."]'] [--env K=V ...] \
        [--workdir /] [--user 0:0] [--label k=v ...]

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...)
with an uncompressed tar layer; `ctr images import` accepts it. Output is
reproducible: fixed mtimes, uid/gid 0, sorted entries.
"""
import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile


def layer_tar(rootfs: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            names = sorted(dirnames + filenames)
            for name in names:
                full = os.path.join(dirpath, name)
                arc = os.path.relpath(full, rootfs)
                info = tar.gettarinfo(full, arcname=arc)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="full image reference, e.g. localhost/x/y:tag")
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--entrypoint", default=None, help="JSON list")
    ap.add_argument("--cmd", default=None, help="JSON list")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--user", default="")
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--arch", default="amd64")
    a = ap.parse_args()

    blobs = {}

    def add_blob(data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return d

    layer = layer_tar(a.rootfs)
    layer_digest = add_blob(layer)

    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env
    cfg = {"Env": env, "WorkingDir": a.workdir}
    if a.entrypoint:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.user:
        cfg["User"] = a.user
    if a.label:
        cfg["Labels"] = dict(kv.split("=", 1) for kv in a.label)
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": a.arch,
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "lameduck mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = add_blob(config_bytes)

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = add_blob(manifest_bytes)

    tag = a.name.rsplit(":", 1)[1] if ":" in a.name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "platform": {"architecture": a.arch, "os": "linux"},
            "annotations": {
                "io.containerd.image.name": a.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }
    index_bytes = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()

    tmp = a.output + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        def put(name: str, data: bytes, mode: int = 0o644):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, 0
            out.addfile(ti, io.BytesIO(data))

        for d in ("blobs", "blobs/sha256"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            out.addfile(ti)
        put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        put("index.json", index_bytes)
        for d in sorted(blobs):
            put("blobs/sha256/" + d.split(":", 1)[1], blobs[d])
    os.replace(tmp, a.output)
    print(f"{a.name} {manifest_digest} -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
