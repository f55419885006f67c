//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! against a real cluster. The services page lists the services, a rollout's page shows its
//! batches and timeline, clicking Pause pauses the rollout (checked through the CLI) and the
//! page follows by itself. A screenshot of the rollout page is saved for a person to look at.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use shoal_tests::*;

/// One HTTP/1.1 exchange with chromedriver; the answer's JSON.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let mut stream =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to chromedriver at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // Read the head, then exactly the body it announces (chromedriver keeps connections open).
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf)?;
        ensure!(n > 0, "chromedriver closed the connection");
        response.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    let text = if head.contains("transfer-encoding: chunked") {
        // Until the last (empty) chunk.
        while !response[head_end..].windows(5).any(|w| w == b"0\r\n\r\n") {
            let n = stream.read(&mut buf)?;
            ensure!(n > 0, "chromedriver closed the connection");
            response.extend_from_slice(&buf[..n]);
        }
        let mut out = String::new();
        let raw = String::from_utf8_lossy(&response[head_end..]).to_string();
        let mut rest = raw.as_str();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16)?;
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).context("a content length")?.trim().parse()?;
        while response.len() < head_end + length {
            let n = stream.read(&mut buf)?;
            ensure!(n > 0, "chromedriver closed the connection");
            response.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&response[head_end..head_end + length]).to_string()
    };
    let value: Value = serde_json::from_str(&text).with_context(|| format!("chromedriver answered {head}: {text}"))?;
    if let Some(error) = value["value"]["error"].as_str() {
        bail!("{method} {path}: {error}: {}", value["value"]["message"]);
    }
    Ok(value)
}

struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    async fn start() -> Result<Browser> {
        let port = free_addr().rsplit(':').next().context("a port")?.to_string();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (install chromium and chromium-driver: scripts/ensure-chromium.sh)")?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            ensure!(tokio::time::Instant::now() < deadline, "chromedriver did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400"]
        }}}});
        let mut browser = Browser { driver, addr, session: String::new() };
        let created = http(&browser.addr, "POST", "/session", Some(&capabilities))?;
        browser.session = created["value"]["sessionId"].as_str().context("a session id")?.to_string();
        Ok(browser)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        http(&self.addr, method, &format!("/session/{}{path}", self.session), body.as_ref())
    }

    fn open(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", Some(json!({ "url": url }))).map(|_| ())
    }

    /// The element ids matching a CSS selector.
    fn find_all(&self, css: &str) -> Result<Vec<String>> {
        let found = self.call("POST", "/elements", Some(json!({"using": "css selector", "value": css})))?;
        Ok(found["value"]
            .as_array()
            .context("elements")?
            .iter()
            .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_string))
            .collect())
    }

    fn text(&self, css: &str) -> Result<String> {
        let element = self.find_all(css)?.into_iter().next().with_context(|| format!("no element {css}"))?;
        let text = self.call("GET", &format!("/element/{element}/text"), None)?;
        Ok(text["value"].as_str().unwrap_or_default().to_string())
    }

    fn attribute(&self, css: &str, name: &str) -> Result<Option<String>> {
        let element = self.find_all(css)?.into_iter().next().with_context(|| format!("no element {css}"))?;
        let value = self.call("GET", &format!("/element/{element}/attribute/{name}"), None)?;
        Ok(value["value"].as_str().map(str::to_string))
    }

    fn click(&self, css: &str) -> Result<()> {
        let element = self.find_all(css)?.into_iter().next().with_context(|| format!("no element {css}"))?;
        self.call("POST", &format!("/element/{element}/click"), Some(json!({}))).map(|_| ())
    }

    fn screenshot(&self, to: &std::path::Path) -> Result<()> {
        use base64::Engine;
        let shot = self.call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["value"].as_str().context("a screenshot")?)?;
        std::fs::write(to, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_services_and_a_rollout_and_pauses_it_from_a_click() -> Result<()> {
    let dashboard = free_addr();
    let mut cluster = Cluster::start_with(1, &["--dashboard-addr", &dashboard]).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.running_addrs()[0].clone();
    ok(&shoal(&host, &["service", "create", "--name", "api", "--detach", "shoal/busybox:1"]));
    ok(&shoal(
        &host,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "--update-delay",
            "60s",
            "--update-monitor",
            "1s",
            "shoal/busybox:1",
        ],
    ));
    // A slow rollout: one slot, then a minute before the next.
    ok(&shoal(&host, &["service", "update", "--detach", "--image", "shoal/busybox:2", "web"]));

    let browser = Browser::start().await?;
    browser.open(&format!("http://{dashboard}/"))?;
    let services = browser.text("#services")?;
    ensure!(services.contains("api") && services.contains("web"), "{services}");
    ensure!(browser.text("#nodes")?.contains("ready"), "the agent's node");
    // The rollout's page, from the link on the services page.
    browser.click("#services tr[data-service='web'] a")?;
    eventually("the rollout page", Duration::from_secs(10), || Ok(browser.find_all("#timeline svg")?.len() == 1))
        .await?;
    ensure!(browser.text("h1")?.starts_with("Rollout web-2"), "{}", browser.text("h1")?);
    eventually("a batch", Duration::from_secs(30), || Ok(!browser.find_all("#batches tr.slot")?.is_empty())).await?;
    // The page follows the store by itself: a change elsewhere makes it fetch itself again.
    ensure!(browser.attribute("body", "data-refreshed")?.is_none(), "not refreshed yet");
    ok(&shoal(&host, &["service", "update", "--detach", "--label-add", "live=1", "api"]));
    eventually("the page refreshed by a server-sent event", Duration::from_secs(10), || {
        Ok(browser.attribute("body", "data-refreshed")?.is_some_and(|n| n.parse::<u32>().unwrap_or(0) >= 1))
    })
    .await?;

    browser.click("button[data-op='pause']")?;
    eventually("the rollout paused, through the CLI", Duration::from_secs(10), || {
        let web = inspect_service(&host, "web")?;
        Ok(web.update_status.is_some_and(|s| s.state == shoal_types::UpdateState::Paused))
    })
    .await?;
    eventually("the page saying paused", Duration::from_secs(10), || Ok(browser.text("#state")? == "paused")).await?;
    eventually("the button's answer", Duration::from_secs(10), || {
        Ok(browser.text("#message")?.contains("pause: done"))
    })
    .await?;

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&shots)?;
    let shot = shots.join("dashboard-rollout.png");
    browser.screenshot(&shot)?;
    ensure!(std::fs::metadata(&shot)?.len() > 10_000, "a real picture at {}", shot.display());
    eprintln!("screenshot of the rollout page: {}", shot.display());

    // A cross-site form cannot act: an action without the dashboard's header is refused.
    let mut stream = std::net::TcpStream::connect(&dashboard)?;
    let web = inspect_service(&host, "web")?;
    write!(stream, "POST /api/rollouts/{}/resume HTTP/1.1\r\nHost: {dashboard}\r\n\r\n", web.id)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    ensure!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // Nor can a page of another site whose name points at 127.0.0.1 (DNS rebinding).
    let port = dashboard.rsplit(':').next().context("a port")?;
    let mut stream = std::net::TcpStream::connect(&dashboard)?;
    write!(stream, "GET / HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    ensure!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    ensure!(inspect_service(&host, "web")?.update_status.is_some_and(|s| s.state == shoal_types::UpdateState::Paused));
    Ok(())
}

/// A dashboard address that is not loopback is refused at start, naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_on_loopback_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(bin("shoal-manager"))
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen-addr",
            &free_addr(),
            "--dashboard-addr",
            "0.0.0.0:18999",
        ])
        .output()?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("the dashboard serves on loopback only"), "{err}");
    Ok(())
}
