//! Just enough of the W3C WebDriver protocol to open a page, run a script, wait for text and
//! take a screenshot, against a chromedriver this module starts and stops.
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, String>;

/// A chromedriver process and one browser session in it; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    /// Start `chromedriver` and a headless Chromium with `args` (and a fresh profile in
    /// `profile_dir`).
    pub fn start(chromedriver: &Path, binary: Option<&str>, args: &[String], profile_dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", chromedriver.display()))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, base, session: String::new(), agent };
        browser.wait_ready()?;

        let mut all_args = args.to_vec();
        all_args.push("--headless=new".into());
        all_args.push("--window-size=1280,900".into());
        all_args.push(format!("--user-data-dir={}", profile_dir.display()));
        let mut options = json!({ "args": all_args });
        if let Some(binary) = binary {
            options["binary"] = json!(binary);
        }
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": options } } });
        let v = browser.call("POST", "/session", Some(caps))?;
        browser.session =
            v["sessionId"].as_str().ok_or_else(|| format!("chromedriver gave no session: {v}"))?.to_string();
        Ok(browser)
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_call("POST", "url", Some(json!({ "url": url }))).map(drop)
    }

    /// Run `script` (a function body; `arguments` holds `args`) and return its value.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.session_call("POST", "execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Text of the first element matching `selector`, or `None` while there is none.
    pub fn text(&self, selector: &str) -> Result<Option<String>> {
        let v = self.execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([selector]),
        )?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Poll until `selector` exists and its text passes `done`, or fail after `timeout`.
    pub fn wait_text(&self, selector: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Some(text) = self.text(selector)? {
                if done(&text) {
                    return Ok(text);
                }
            }
            if start.elapsed() > timeout {
                let body = self.text("body")?.unwrap_or_default();
                return Err(format!("{selector} not ready after {timeout:?}; page text:\n{body}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Give the file at `path` to the `<input type=file>` matching `selector`, as a user
    /// choosing it would (WebDriver "Element Send Keys" with the path).
    pub fn upload_file(&self, selector: &str, path: &Path) -> Result<()> {
        let v = self.session_call("POST", "element", Some(json!({ "using": "css selector", "value": selector })))?;
        let id = v
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no element {selector}: {v}"))?
            .to_string();
        let path = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
        self.session_call("POST", &format!("element/{id}/value"), Some(json!({ "text": path.display().to_string() })))
            .map(drop)
    }

    /// Drop the files or folders at `paths` on the element matching `selector`, as a user
    /// dragging them from the file manager would: Chromium's own drag events with real paths
    /// (DevTools `Input.dispatchDragEvent` through chromedriver), so a dropped folder arrives
    /// as a directory entry the page walks.
    pub fn drop_paths(&self, selector: &str, paths: &[&Path]) -> Result<()> {
        let at = self.execute(
            "const e = document.querySelector(arguments[0]); if (!e) return null; e.scrollIntoView(); \
             const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];",
            json!([selector]),
        )?;
        let (x, y) = match (at[0].as_f64(), at[1].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => return Err(format!("no element {selector} to drop on")),
        };
        let files = paths
            .iter()
            .map(|p| p.canonicalize().map(|p| p.display().to_string()).map_err(|e| format!("{}: {e}", p.display())))
            .collect::<Result<Vec<_>>>()?;
        let data = json!({ "items": [], "files": files, "dragOperationsMask": 1 });
        for kind in ["dragEnter", "dragOver", "drop"] {
            let params = json!({ "type": kind, "x": x, "y": y, "data": data });
            self.session_call(
                "POST",
                "goog/cdp/execute",
                Some(json!({ "cmd": "Input.dispatchDragEvent", "params": params })),
            )?;
        }
        Ok(())
    }

    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.session_call("GET", "screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().ok_or("screenshot was not a string")?)
            .map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| e.to_string())
    }

    fn session_call(&self, method: &str, what: &str, body: Option<Value>) -> Result<Value> {
        self.call(method, &format!("/session/{}/{what}", self.session), body)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        };
        let mut response = response.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let v: Value = response.body_mut().read_json().map_err(|e| format!("{method} {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn wait_ready(&self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.call("GET", "/status", None).is_ok_and(|v| v["ready"] == json!(true)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("chromedriver did not become ready in 30 s".into())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}
