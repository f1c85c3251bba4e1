//! Real caches for the tests: an origin that serves the watched tree, a `varnishd` loading the
//! shipped `examples/varnish/purgewatch.vcl`, and an nginx loading the shipped
//! `examples/nginx/purgewatch.conf` with ngx_cache_purge — each on 127.0.0.1, on a free port,
//! stopped when dropped. `.ci/run` installs varnish, nginx and libnginx-mod-http-cache-purge; a
//! machine without them fails these tests with the package to install.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{DEADLINE, wait_until};

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The origin: the watched tree over HTTP (a directory URL serves its index.html), as a web
/// server would; every response may be cached for a long time.
pub fn origin(root: PathBuf) -> u16 {
    counted_origin(root).0
}

/// [`origin`], with the number of requests it has served (the caches' misses).
pub fn counted_origin(root: PathBuf) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Origin {
        root: PathBuf,
        served: Arc<AtomicUsize>,
    }
    async fn serve(State(o): State<Arc<Origin>>, uri: Uri) -> Response {
        o.served.fetch_add(1, Ordering::Relaxed);
        let path = percent_encoding::percent_decode_str(uri.path())
            .decode_utf8_lossy()
            .into_owned();
        let mut file = o.root.join(path.trim_start_matches('/'));
        if path.ends_with('/') || file.is_dir() {
            file = file.join("index.html");
        }
        match std::fs::read(&file) {
            Ok(b) => (StatusCode::OK, [("cache-control", "max-age=3600")], b).into_response(),
            Err(_) => (StatusCode::NOT_FOUND, [("cache-control", "max-age=3600")], "not found").into_response(),
        }
    }
    let served = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback(serve).with_state(Arc::new(Origin {
        root,
        served: served.clone(),
    }));
    (super::fake::serve(app, 0).port(), served)
}

/// An origin like [`origin`] that lags behind the tree, as one node of a replicated origin
/// can: the first `lag` requests for a file after it changed still get the bytes it served
/// before. A cache that refetches at once after a purge caches the old bytes again, which only
/// a re-purge (after verification found them) fixes.
pub fn lagging_origin(root: PathBuf, lag: usize) -> u16 {
    use std::collections::HashMap;
    use std::sync::Mutex;
    /// The bytes served last for a path, and how many more requests get them.
    type Served = (Vec<u8>, Option<usize>);
    struct Lagging {
        root: PathBuf,
        lag: usize,
        served: Mutex<HashMap<String, Served>>,
    }
    async fn serve(State(o): State<Arc<Lagging>>, uri: Uri) -> Response {
        let path = percent_encoding::percent_decode_str(uri.path())
            .decode_utf8_lossy()
            .into_owned();
        let mut file = o.root.join(path.trim_start_matches('/'));
        if path.ends_with('/') || file.is_dir() {
            file = file.join("index.html");
        }
        let Ok(now) = std::fs::read(&file) else {
            return (StatusCode::NOT_FOUND, [("cache-control", "max-age=3600")], "not found").into_response();
        };
        let body = {
            let mut served = o.served.lock().unwrap();
            match served.get_mut(&path) {
                Some((last, owed)) if *last != now => {
                    let left = owed.get_or_insert(o.lag);
                    if *left > 0 {
                        *left -= 1;
                        last.clone()
                    } else {
                        served.insert(path.clone(), (now.clone(), None));
                        now
                    }
                }
                _ => {
                    served.insert(path.clone(), (now.clone(), None));
                    now
                }
            }
        };
        (StatusCode::OK, [("cache-control", "max-age=3600")], body).into_response()
    }
    let app = Router::new().fallback(serve).with_state(Arc::new(Lagging {
        root,
        lag,
        served: Mutex::new(HashMap::new()),
    }));
    super::fake::serve(app, 0).port()
}

/// `GET path` through the cache at `port` with `Host: host`: the status and the body.
pub fn visit(port: u16, host: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_string())
}

fn need(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed: apt-get install {package} (.ci/run does)");
}

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// A running cache process, stopped when dropped.
pub struct Cache {
    pub port: u16,
    pub endpoint: String,
    child: Option<Child>,
    start: Box<dyn Fn() -> Child + Send>,
}

impl Cache {
    fn launch(port: u16, start: Box<dyn Fn() -> Child + Send>) -> Cache {
        let mut c = Cache {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            child: None,
            start,
        };
        c.start();
        c
    }

    /// Starts it (again), on the same port, and waits until it answers.
    pub fn start(&mut self) {
        let mut child = (self.start)();
        let port = self.port;
        let up = wait_until(DEADLINE, || {
            listening(port) || child.try_wait().ok().flatten().is_some()
        });
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the cache on port {port} exited at start: {st}");
        }
        assert!(up, "the cache on port {port} did not listen");
        self.child = Some(child);
    }

    /// Stops it and waits until the port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's process group; no memory is touched.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGTERM);
            }
            let _ = c.wait();
        }
        let port = self.port;
        assert!(wait_until(DEADLINE, || !listening(port)), "port {port} still open");
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `stop`.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

/// `varnishd` with the shipped VCL, its backend set to `origin_port`, in `dir`.
pub fn varnish(dir: &Path, origin_port: u16) -> Cache {
    varnish_with(dir, origin_port, "malloc,16m")
}

/// [`varnish`] with `storage` (`malloc,256m` holds a 10,000-page site without evicting any).
pub fn varnish_with(dir: &Path, origin_port: u16, storage: &str) -> Cache {
    let storage = storage.to_string();
    use std::os::unix::process::CommandExt;
    let varnishd = need("varnishd", "varnish");
    let port = free_port();
    let work = dir.join(format!("varnish-{port}"));
    std::fs::create_dir_all(&work).unwrap();
    let vcl =
        repo_file("examples/varnish/purgewatch.vcl").replace(".port = \"8080\"", &format!(".port = \"{origin_port}\""));
    let vcl_path = work.join("purgewatch.vcl");
    std::fs::write(&vcl_path, vcl).unwrap();
    Cache::launch(
        port,
        Box::new(move || {
            let mut cmd = Command::new(&varnishd);
            cmd.args([
                "-F",
                "-j",
                "none",
                "-T",
                "none",
                "-s",
                &storage,
                "-p",
                "ban_lurker_sleep=0.01",
            ])
            .arg("-a")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-f")
            .arg(&vcl_path)
            .arg("-n")
            .arg(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
            super::unless_busy(|| cmd.spawn()).expect("start varnishd")
        }),
    )
}

/// nginx with the shipped configuration (and ngx_cache_purge), its origin `origin_port`.
pub fn nginx(dir: &Path, origin_port: u16) -> Cache {
    use std::os::unix::process::CommandExt;
    let nginx = need("nginx", "nginx libnginx-mod-http-cache-purge");
    let module = [
        "/usr/lib/nginx/modules/ngx_http_cache_purge_module.so",
        "/usr/lib64/nginx/modules/ngx_http_cache_purge_module.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or_else(|| {
        panic!("ngx_cache_purge is not installed: apt-get install libnginx-mod-http-cache-purge (.ci/run does)")
    });
    let port = free_port();
    let prefix = dir.join(format!("nginx-{port}"));
    std::fs::create_dir_all(prefix.join("cache")).unwrap();
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    let site = repo_file("examples/nginx/purgewatch.conf")
        .replace(
            "/var/cache/nginx/purgewatch",
            &prefix.join("cache").display().to_string(),
        )
        .replace("server 127.0.0.1:8080;", &format!("server 127.0.0.1:{origin_port};"))
        .replace("listen 127.0.0.1:8081;", &format!("listen 127.0.0.1:{port};"));
    std::fs::write(prefix.join("site.conf"), site).unwrap();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    let tmp = prefix.join("tmp").display().to_string();
    let conf = format!(
        "load_module {module};\n{user}worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n  include {p}/site.conf;\n}}\n",
        p = prefix.display()
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    Cache::launch(
        port,
        Box::new(move || {
            let mut cmd = Command::new(&nginx);
            cmd.arg("-c")
                .arg(prefix.join("nginx.conf"))
                .arg("-p")
                .arg(&prefix)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            super::unless_busy(|| cmd.spawn()).expect("start nginx")
        }),
    )
}
