//! A real headless Chromium, driven over the W3C WebDriver protocol by Debian's
//! `chromedriver`, which the test starts. The protocol is plain JSON over HTTP on loopback,
//! so a few calls with reqwest are the whole client. Missing Chromium fails the test loudly:
//! `make test` installs it (`hack/ensure-packages.sh chromium chromium-driver`).

use std::{io::Read as _, io::Write as _, path::Path, time::Duration};

use serde_json::{Value, json};

use crate::support::{eventually, free_port, test_logs_dir};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser session; the session and the driver end when it is dropped.
pub struct Browser {
    driver: std::process::Child,
    port: u16,
    session: String,
    http: reqwest::Client,
}

fn require(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the console's browser tests need Debian's chromium and \
         chromium-driver. Install them with `hack/ensure-packages.sh chromium chromium-driver` \
         (`make test` does)."
    );
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start(name: &str) -> Self {
        require(CHROMEDRIVER);
        require(CHROMIUM);
        let port = free_port();
        let log = std::fs::File::create(test_logs_dir().join(format!("{name}-chromedriver.log")))
            .expect("log file");
        let driver = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let status = format!("http://127.0.0.1:{port}/status");
        eventually("chromedriver to be ready", || async {
            let answer = http.get(&status).send().await.ok()?;
            let body: Value = answer.json().await.ok()?;
            body["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let profile = test_logs_dir().join(format!("{name}-chromium-profile"));
        let _ = std::fs::remove_dir_all(&profile);
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            "--lang=en-US",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created: Value = http
            .post(format!("http://127.0.0.1:{port}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a session");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Chromium did not start: {created}"))
            .to_string();
        Self {
            driver,
            port,
            session,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/session/{}{path}",
            self.port, self.session
        )
    }

    /// One WebDriver command; `Err` carries the driver's error.
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(answer["value"].clone())
        } else {
            Err(answer["value"].to_string())
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .expect("navigates");
    }

    async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        // The element reference is the one value of the answer's object.
        found
            .as_object()?
            .values()
            .next()?
            .as_str()
            .map(str::to_string)
    }

    /// Waits until `css` matches an element.
    pub async fn wait_for(&self, css: &str) {
        eventually(&format!("{css} to appear"), || self.find(css)).await;
    }

    /// Waits until `css` matches nothing.
    pub async fn wait_gone(&self, css: &str) {
        eventually(&format!("{css} to go"), || async {
            self.find(css).await.is_none().then_some(())
        })
        .await;
    }

    /// Clicks the element `css` matches, once it is there and clickable (the live table may
    /// replace it between finding and clicking).
    pub async fn click(&self, css: &str) {
        eventually(&format!("to click {css}"), || async {
            let element = self.find(css).await?;
            self.command(
                reqwest::Method::POST,
                &format!("/element/{element}/click"),
                Some(json!({})),
            )
            .await
            .ok()
        })
        .await;
    }

    /// Types `text` into the element `css` matches.
    pub async fn type_into(&self, css: &str, text: &str) {
        eventually(&format!("to type into {css}"), || async {
            let element = self.find(css).await?;
            self.command(
                reqwest::Method::POST,
                &format!("/element/{element}/value"),
                Some(json!({"text": text})),
            )
            .await
            .ok()
        })
        .await;
    }

    /// Runs `script` in the page (`arguments[0..]` = `args`) and returns its result.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
        .expect("the script runs")
    }

    /// The visible text of the first element `css` matches ("" when none).
    pub async fn text(&self, css: &str) -> String {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';";
        self.script(script, json!([css]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the text of `css` contains `needle`; returns that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        eventually(&format!("{css} to read {needle:?}"), || async {
            let text = self.text(css).await;
            text.contains(needle).then_some(text)
        })
        .await
    }

    /// The whole page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .expect("page source")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Writes a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        // Let the layout settle (fonts, a dialog opening) before the picture.
        self.script("return document.fonts.ready.then(() => true);", json!([]))
            .await;
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await
            .expect("screenshot");
        let bytes: k8s_openapi::ByteString = serde_json::from_value(encoded).expect("base64 PNG");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("screenshot dir");
        std::fs::write(path, bytes.0).expect("screenshot is written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session stops Chromium (killing only chromedriver would leave it running).
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
