//! A headless Chromium driven over the Chrome DevTools Protocol: just enough of a
//! client (commands with ids, events collected) for the page test, over
//! tokio-tungstenite, instead of a full CDP crate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Env var naming the Chromium binary.
pub const CHROMIUM_ENV: &str = "EVENTPIPE_TEST_CHROMIUM";

/// Env var that turns a missing browser into a failure (CI sets it).
pub const REQUIRE_ENV: &str = "EVENTPIPE_REQUIRE_BROWSER";

/// The Chromium binary: `EVENTPIPE_TEST_CHROMIUM`, or a usual install location.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CHROMIUM_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A browser process with its own profile directory; killed and cleaned up on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    /// The browser-level DevTools WebSocket URL.
    pub ws_url: String,
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and a DevTools port chosen by it.
    pub fn launch(binary: &Path) -> Browser {
        static N: AtomicU64 = AtomicU64::new(0);
        let profile = std::env::temp_dir().join(format!(
            "dashboard-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1440,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut browser = Browser { child, profile, ws_url: String::new() };
        // Chromium writes the port it picked (and the browser target's path) here.
        let port_file = browser.profile.join("DevToolsActivePort");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    browser.ws_url = format!("ws://127.0.0.1:{port}{path}");
                    return browser;
                }
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!("chromium exited early with {status}");
            }
            assert!(started.elapsed() < Duration::from_secs(30), "chromium did not open its DevTools port in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A DevTools connection: commands by id, events kept for inspection.
pub struct Cdp {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    next_id: AtomicU64,
}

impl Cdp {
    /// Connects to a browser's DevTools WebSocket.
    pub async fn connect(ws_url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("connect to DevTools");
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (p, e) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Ok(text) = m.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
                match v.get("id").and_then(Value::as_u64) {
                    Some(id) => {
                        if let Some(tx) = p.lock().unwrap().remove(&id) {
                            let _ = tx.send(v);
                        }
                    }
                    None => e.lock().unwrap().push(v),
                }
            }
        });
        Cdp { out, pending, events, next_id: AtomicU64::new(1) }
    }

    /// Sends `method` (to `session`, when given) and returns its result, or the error message.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out.send(Message::text(msg.to_string())).map_err(|_| "DevTools connection closed".to_owned())?;
        let reply = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| format!("{method}: no answer in 30 s"))?
            .map_err(|_| "DevTools connection closed".to_owned())?;
        match reply.get("error") {
            Some(e) => Err(format!("{method}: {e}")),
            None => Ok(reply["result"].clone()),
        }
    }

    /// Events received so far with method `method`.
    pub fn events(&self, method: &str) -> Vec<Value> {
        self.events.lock().unwrap().iter().filter(|e| e["method"] == method).cloned().collect()
    }
}

/// One page (tab) attached with a flat session.
pub struct Page<'a> {
    cdp: &'a Cdp,
    session: String,
}

impl<'a> Page<'a> {
    /// Opens a blank tab and attaches to it.
    pub async fn open(cdp: &'a Cdp) -> Page<'a> {
        let target = cdp.call(None, "Target.createTarget", json!({ "url": "about:blank" })).await.unwrap();
        let attached = cdp
            .call(None, "Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true }))
            .await
            .unwrap();
        let session = attached["sessionId"].as_str().expect("a session id").to_owned();
        Page { cdp, session }
    }

    /// Sends a command to this page.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp.call(Some(&self.session), method, params).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Evaluates `expression` in the page: its value (promises awaited), or what it threw.
    pub async fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }))
            .await;
        match r.get("exceptionDetails") {
            Some(ex) => Err(ex["exception"]["description"].as_str().unwrap_or("an exception").to_owned()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Evaluates `expression` in the page and returns its value; panics if it throws.
    pub async fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression).await.unwrap_or_else(|e| panic!("{expression} threw: {e}"))
    }

    /// Evaluates `expression` every 100 ms until it is truthy (a throw counts as not yet:
    /// the page may still be loading); panics naming `what` after `timeout`.
    pub async fn wait_for(&self, what: &str, timeout: Duration, expression: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.try_eval(expression).await;
            if let Ok(v) = &v {
                let falsy = matches!(v, Value::Null | Value::Bool(false)) || *v == json!(0) || *v == json!("");
                if !falsy {
                    return v.clone();
                }
            }
            assert!(started.elapsed() < timeout, "timed out waiting for {what} ({expression} = {v:?})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub async fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// Presses and releases Enter.
    pub async fn press_enter(&self) {
        let key = json!({ "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13 });
        let mut down = key.clone();
        down["type"] = "keyDown".into();
        down["text"] = "\r".into();
        self.call("Input.dispatchKeyEvent", down).await;
        let mut up = key;
        up["type"] = "keyUp".into();
        self.call("Input.dispatchKeyEvent", up).await;
    }

    /// A PNG of the whole page.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true })).await;
        base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().expect("screenshot data")).unwrap()
    }
}
