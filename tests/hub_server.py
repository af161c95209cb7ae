"""A small server on 127.0.0.1 that speaks the part of the Hugging Face Hub's HTTP API that `huggingface_hub` and
transformers use to push and load a model, so the real client code runs unmodified against it (`HF_ENDPOINT`).

Routes: repo creation, whoami, model info, file tree, README metadata validation, preupload, commit (NDJSON, inline
files and LFS pointers),
branches, the git-LFS batch API with single-part uploads (so large files take the Hub's LFS path), and `resolve`
downloads (GET and HEAD) with the headers the client reads (X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size,
X-Error-Code). Writes need the token; a private repo is invisible without it (404 RepoNotFound, as on the Hub).
The Xet storage protocol is not spoken: clients run with HF_HUB_DISABLE_XET=1 and upload through LFS.

Fixture `hub` (a pytest plugin, see tests/conftest.py): a running server, its state and the environment a client
process needs (`hub.env(cache)`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import pytest

TOKEN = "hf_local_test_token"
USER = "tester"
LFS_THRESHOLD = 1 << 20  # files of 1 MiB or more, or binary ones, go through LFS


@dataclass
class Commit:
    oid: str
    files: dict[str, "Blob"]
    parent: str | None
    message: str


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


class HubState:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for the tests to read
        self.lock = threading.Lock()

    def create(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id, private)
        root = _commit_oid(repo_id, "", {})
        repo.commits[root] = Commit(root, {".gitattributes": Blob(b"*.safetensors filter=lfs\n", False)}, None,
                                    "initial commit")
        repo.refs["main"] = root
        self.repos[repo_id] = repo
        return repo


def _commit_oid(repo_id: str, parent: str, files: dict) -> str:
    digest = hashlib.sha1(f"{repo_id}:{parent}:{time.time_ns()}".encode())
    for path in sorted(files):
        digest.update(path.encode() + files[path].git_oid.encode())
    return digest.hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState
    endpoint: str

    def log_message(self, *args):  # quiet
        pass

    # ------------------------------------------------------------------------------------------- helpers
    def _authorised(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {TOKEN}"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value, headers: dict | None = None):
        self._send(status, json.dumps(value).encode(), headers)

    def _error(self, status: int, code: str | None, message: str):
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message} if code else None)

    def _repo(self, repo_id: str, write: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorised()):
            self._error(404 if repo is None else 401, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if write and not self._authorised():
            self._error(401, None, "Invalid credentials in Authorization header")
            return None
        return repo

    def _route(self):
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self.state.lock:
            self.state.requests.append((self.command, path))
        for method, pattern, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and self.command in method:
                return handler(self, query=query, **match.groupdict())
        self._error(404, None, f"no route {self.command} {path}")

    do_GET = do_POST = do_PUT = do_HEAD = _route

    # ------------------------------------------------------------------------------------------- routes
    def whoami(self, query):
        if not self._authorised():
            return self._error(401, None, "Invalid user token")
        self._json(200, {"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}}})

    def validate_yaml(self, query):
        """The Hub checks a README's front matter before a commit that changes it."""
        import yaml

        content = json.loads(self._body()).get("content", "")
        try:
            meta = yaml.safe_load(content.split("---\n")[1]) if content.startswith("---\n") else {}
        except (yaml.YAMLError, IndexError) as err:
            return self._error(400, None, f"invalid YAML in README.md: {err}")
        if meta is not None and not isinstance(meta, dict):
            return self._error(400, None, "README.md metadata must be a mapping")
        self._json(200, {"errors": [], "warnings": []})

    def create_repo(self, query):
        if not self._authorised():
            return self._error(401, None, "You must be authenticated to create a repo")
        payload = json.loads(self._body() or b"{}")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        with self.state.lock:
            if repo_id in self.state.repos:  # the Hub answers with the repo's url too
                return self._json(409, {"error": "You already created this model repo",
                                        "url": f"{self.endpoint}/{repo_id}"})
            private = payload.get("private", payload.get("visibility") == "private")
            self.state.create(repo_id, bool(private))
        self._json(200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id})

    def model_info(self, query, repo_id, revision="main"):
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        self._json(200, {"id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid,
                         "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                         "tags": [], "siblings": [{"rfilename": p} for p in sorted(commit.files)],
                         "lastModified": "2026-12-04T00:00:00.000Z", "createdAt": "2026-12-04T00:00:00.000Z"})

    def tree(self, query, repo_id, revision, subpath=""):
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        prefix = (subpath or "").strip("/")
        entries = []
        for path, blob in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 134}
            entries.append(entry)
        self._json(200, entries)

    def preupload(self, query, repo_id, revision):
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        files = json.loads(self._body())["files"]
        out = []
        for f in files:
            sample = base64.b64decode(f.get("sample", ""))
            lfs = f["size"] >= LFS_THRESHOLD or b"\0" in sample
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": None})
        self._json(200, {"files": out, "commitOid": repo.refs.get(unquote(revision))})

    def lfs_batch(self, query, repo_id):
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        payload = json.loads(self._body())
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs:
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, query, oid):
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, None, "sha256 mismatch")
        with self.state.lock:
            self.state.lfs[oid] = data
        self._send(200)

    def commit(self, query, repo_id, revision):
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        branch = unquote(revision)
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        with self.state.lock:
            parent = repo.refs.get(branch)
            if parent is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            files = dict(repo.commits[parent].files)
            header = {}
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    header = value
                    if value.get("parentCommit") not in (None, parent):
                        return self._error(412, None, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    if value["oid"] not in self.state.lfs:
                        return self._error(422, None, f"LFS object {value['oid']} was not uploaded")
                    files[value["path"]] = Blob(self.state.lfs[value["oid"]], True)
                elif key in ("deletedFile", "deletedFolder"):
                    files = {p: b for p, b in files.items()
                             if p != value["path"] and not p.startswith(value["path"].rstrip("/") + "/")}
            oid = _commit_oid(repo_id, parent, files)
            repo.commits[oid] = Commit(oid, files, parent, header.get("summary", ""))
            repo.refs[branch] = oid
        self._json(200, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid, "success": True})

    def create_branch(self, query, repo_id, branch):
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        payload = json.loads(self._body() or b"{}")
        with self.state.lock:
            if branch in repo.refs:
                return self._error(409, None, f"Branch {branch} already exists")
            start = repo.resolve(payload.get("startingPoint") or "main")
            repo.refs[branch] = start.oid
        self._json(200, {})

    def resolve(self, query, repo_id, revision, path):
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        blob = commit.files.get(path)
        if blob is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.git_oid}"', "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})
        self._send(200, blob.data, headers, content_type="application/octet-stream")


REPO = r"(?P<repo_id>[^/]+/[^/]+)"
ROUTES = [
    ({"GET"}, r"/api/whoami-v2", Handler.whoami),
    ({"POST"}, r"/api/repos/create", Handler.create_repo),
    ({"POST"}, r"/api/validate-yaml", Handler.validate_yaml),
    ({"GET"}, rf"/api/models/{REPO}", Handler.model_info),
    ({"GET"}, rf"/api/models/{REPO}/revision/(?P<revision>[^/]+)", Handler.model_info),
    ({"GET"}, rf"/api/models/{REPO}/tree/(?P<revision>[^/]+)(?P<subpath>/.*)?", Handler.tree),
    ({"POST"}, rf"/api/models/{REPO}/preupload/(?P<revision>[^/]+)", Handler.preupload),
    ({"POST"}, rf"/api/models/{REPO}/commit/(?P<revision>[^/]+)", Handler.commit),
    ({"POST"}, rf"/api/models/{REPO}/branch/(?P<branch>[^/]+)", Handler.create_branch),
    ({"POST"}, rf"/{REPO}\.git/info/lfs/objects/batch", Handler.lfs_batch),
    ({"PUT"}, r"/lfs-upload/(?P<oid>[0-9a-f]{64})", Handler.lfs_upload),
    ({"GET", "HEAD"}, rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", Handler.resolve),
]


class LocalHub:
    """A running server: `url`, `state`, and `env(cache_dir)` for a client process."""

    def __init__(self):
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        handler.endpoint = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self, cache_dir, token: str | None = TOKEN) -> dict[str, str]:
        """Environment of a client process: this server as the Hub, its own cache folder (a "machine"), the token."""
        import os

        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
        env.update({"HF_ENDPOINT": self.url, "HF_HUB_CACHE": str(cache_dir), "HF_HOME": str(cache_dir),
                    "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"})
        if token is not None:
            env["HF_TOKEN"] = token
        return env

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def hub():
    server = LocalHub()
    yield server
    server.close()
