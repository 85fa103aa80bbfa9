"""A small Hugging Face Hub-compatible HTTP server for tests, because no Hub can run on an offline machine.

It speaks the part of the Hub protocol that `huggingface_hub` 2.x uses for pushing and pulling model repositories
(facts in shared/notes/offline-data-and-hub.md), stores what is pushed in memory, with real commits and branches, and
answers with the status codes and `X-Error-Code` headers the client turns into its typed errors:

    POST /api/repos/create                       create (409 with the URL when it exists)
    GET  /api/models/{repo}[/revision/{rev}]      repo info with "sha" and "siblings"
    GET  /api/models/{repo}/tree/{rev}[/{path}]   file listing (?recursive=true)
    POST /api/models/{repo}/preupload/{rev}       every file "regular" (inline base64; no LFS or Xet server here)
    POST /api/models/{repo}/commit/{rev}          NDJSON commit: header, file, deletedFile, deletedFolder
    HEAD/GET /{repo}/resolve/{rev}/{path}         file bytes, X-Repo-Commit, ETag (git blob sha1), Content-Length
    POST /api/validate-yaml                       model card metadata check
    GET  /api/whoami-v2                           the token's user
    DELETE /api/repos/delete                      delete

Writes need `Authorization: Bearer <token>`. Unknown routes answer 404 with `X-Error-Code: NotImplemented` and are
recorded, so that a client call the server does not know fails loudly instead of passing by accident.
"""

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

MODELS = "/api/models/"


def git_blob_sha1(content: bytes) -> str:
    """The id git (and the Hub's ETag for non-LFS files) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    title: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def commit(self, branch: str, files: dict[str, bytes], title: str) -> Commit:
        parent = self.branches.get(branch)
        oid = hashlib.sha1(f"{self.repo_id}|{parent}|{title}|{time.time_ns()}".encode()).hexdigest()
        self.commits[oid] = Commit(oid, files, title, parent)
        self.branches[branch] = oid
        return self.commits[oid]

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        oid = self.branches.get(revision.removeprefix("refs/heads/"), revision)
        return self.commits.get(oid)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HubState:
    def __init__(self, users: dict[str, str]):
        self.users = users  # token -> user name
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}.")
        return self.repos[repo_id]

    def commit_at(self, repo_id: str, revision: str) -> Commit:
        commit = self.repo(repo_id).resolve(revision)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
        return commit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set by `serve`

    def log_message(self, *args) -> None:  # the test output stays quiet; requests are recorded in state.requests
        pass

    # ---- plumbing -----------------------------------------------------------------------------------------------
    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        path = url.path
        self.state.requests.append((method, path))
        try:
            body = self.read_body()
            with self.state.lock:
                self.route(method, path, body)
        except HubError as error:
            self.send(error.status, {"error": error.message}, error_code=error.code, error_message=error.message)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(
        self, status, payload=None, *, raw: bytes | None = None, headers=None, error_code=None, error_message=None
    ):
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if error_code:
            self.send_header("X-Error-Code", error_code)
        if error_message:
            self.send_header("X-Error-Message", error_message)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def user(self) -> str:
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.state.users:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return self.state.users[token]

    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- routes -------------------------------------------------------------------------------------------------
    def route(self, method: str, path: str, body: bytes) -> None:
        if method == "POST" and path == "/api/repos/create":
            return self.create_repo(json.loads(body))
        if method == "DELETE" and path == "/api/repos/delete":
            return self.delete_repo(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self.send(200, {"errors": [], "warnings": []})
        if method == "GET" and path == "/api/whoami-v2":
            user = self.user()
            return self.send(200, {"type": "user", "name": user, "auth": {"accessToken": {"role": "write"}}})
        if path.startswith(MODELS):
            return self.api_models(method, path[len(MODELS) :].split("/"), body)
        parts = path.strip("/").split("/")
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve("/".join(parts[:2]), parts[3], "/".join(unquote(p) for p in parts[4:]))
        self.state.unknown.append((method, path))
        raise HubError(404, "NotImplemented", f"The test Hub server does not implement {method} {path}")

    def create_repo(self, payload: dict) -> None:
        user = self.user()
        if payload.get("type", "model") != "model":
            raise HubError(400, None, "The test Hub server stores model repositories only.")
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.base_url()}/{repo_id}"
        if repo_id in self.state.repos:
            return self.send(409, {"error": "You already created this model repo", "url": url})
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.commit(
            "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, "initial commit"
        )
        self.state.repos[repo_id] = repo
        self.send(200, {"url": url, "name": repo_id})

    def delete_repo(self, payload: dict) -> None:
        user = self.user()
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        self.state.repo(repo_id)
        del self.state.repos[repo_id]
        self.send(200, {})

    def api_models(self, method: str, parts: list[str], body: bytes) -> None:
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        if method == "GET" and not rest:
            return self.repo_info(repo_id, "main")
        if method == "GET" and rest[0] == "revision" and len(rest) >= 2:
            return self.repo_info(repo_id, "/".join(rest[1:]))
        if method == "GET" and rest[0] == "tree" and len(rest) >= 2:
            return self.tree(repo_id, rest[1], "/".join(unquote(p) for p in rest[2:]))
        if method == "POST" and rest[0] == "preupload" and len(rest) >= 2:
            self.user()
            self.state.commit_at(repo_id, "/".join(rest[1:]))
            files = json.loads(body)["files"]
            return self.send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                              "oid": None} for f in files]})  # fmt: skip
        if method == "POST" and rest[0] == "commit" and len(rest) >= 2:
            return self.commit(repo_id, unquote("/".join(rest[1:])), body)
        self.state.unknown.append((method, MODELS + "/".join(parts)))
        raise HubError(404, "NotImplemented", f"The test Hub server does not implement {method} {MODELS}{parts}")

    def repo_info(self, repo_id: str, revision: str) -> None:
        commit = self.state.commit_at(repo_id, revision)
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        self.send(200, {"_id": repo_id, "id": repo_id, "modelId": repo_id, "sha": commit.oid, "private": False,
                        "siblings": siblings, "tags": [], "downloads": 0, "likes": 0,
                        "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"})  # fmt: skip

    def tree(self, repo_id: str, revision: str, folder: str) -> None:
        commit = self.state.commit_at(repo_id, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries, folders = [], set()
        for path, content in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            relative = path[len(prefix) :].split("/")
            for depth in range(1, len(relative)):
                folders.add(prefix + "/".join(relative[:depth]))
            if recursive or len(relative) == 1:
                entries.append({"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)})
        if prefix and not entries and not folders:
            raise HubError(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        for name in sorted(folders):
            if recursive or name.count("/") == prefix.count("/"):
                entries.append({"type": "directory", "path": name, "size": 0, "oid": git_blob_sha1(name.encode())})
        self.send(200, entries)

    def commit(self, repo_id: str, branch: str, body: bytes) -> None:
        self.user()
        repo = self.state.repo(repo_id)
        if self.query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HubError(400, None, "The test Hub server does not implement pull requests.")
        if branch.removeprefix("refs/heads/") not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        branch = branch.removeprefix("refs/heads/")
        files = dict(repo.commits[repo.branches[branch]].files)
        title = "commit"
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value.get("summary") or title
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[branch]:
                    raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(folder)}
            else:  # lfsFile and others need an LFS server, which this one is not
                raise HubError(400, None, f"The test Hub server does not implement commit operation {key!r}.")
        commit = repo.commit(branch, files, title)
        self.send(200, {"commitUrl": f"{self.base_url()}/{repo_id}/commit/{commit.oid}", "commitOid": commit.oid,
                        "pullRequestUrl": None})  # fmt: skip

    def resolve(self, repo_id: str, revision: str, path: str) -> None:
        commit = self.state.commit_at(repo_id, revision)
        if path not in commit.files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {unquote(revision)}")
        content = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_sha1(content)}"', "Accept-Ranges": "bytes"}
        self.send(200, raw=content, headers=headers)


class HubServer:
    """`with HubServer() as hub:` serves on 127.0.0.1 at a free port; `hub.endpoint`, `hub.token`, `hub.user`."""

    def __init__(self, user: str = "vaswani-tester", token: str = "hf_test_token"):
        self.user, self.token = user, token
        self.state = HubState({token: user})
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
