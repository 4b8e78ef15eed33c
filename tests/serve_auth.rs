//! Who may change what on `millrace serve`: the login form and its
//! HttpOnly session cookie, the CSRF header a cookie's change needs,
//! changes from another site's page refused (with a token or without), and
//! a loopback server answering only to loopback host names. Each refusal
//! has its control: the same request, made right, goes through.

mod support;

use millrace::TopicSpec;
use serde_json::Value;
use support::serve::{Served, call, client, http, serve};

/// A token file in a temporary directory (kept alive by the returned
/// guard).
fn token_file(token: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

async fn with_group(prefix: &str) {
    let c = client(prefix).await;
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    c.create_group("orders", "billing", &millrace::StartAt::Earliest)
        .await
        .unwrap();
}

/// Signs in with `token`; the cookie it set (`name=value`), if any, and
/// the response's status.
async fn sign_in(s: &Served, token: &str) -> (u16, Option<String>, String) {
    let r = http()
        .post(format!("{}/login", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.text().await.unwrap();
    (status, cookie, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_opens_a_session_whose_changes_need_its_csrf_header() {
    let prefix = support::unique_prefix("serve-login");
    with_group(&prefix).await;
    let token = "correct-horse-battery-staple";
    let (_dir, file) = token_file(token);
    let s = serve(&support::shared_url(), &prefix, &["--token-file", &file]).await;
    let http = http();
    let pause = s.api("/topics/orders/groups/billing/pause");

    // The form is there for anyone; a wrong token gets it again, no cookie.
    let (status, form) = call(http.get(format!("{}/login", s.base))).await;
    assert_eq!(status, 200);
    assert!(form.as_str().unwrap().contains("name=\"token\""));
    let (status, cookie, body) = sign_in(&s, "wrong-token-wrong-token").await;
    assert_eq!(status, 401);
    assert_eq!(cookie, None);
    assert!(body.contains("not this server"), "{body}");

    // The right token: a session cookie the page's script cannot read.
    let (status, cookie, _) = sign_in(&s, token).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains(token),
        "the cookie is not the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    // Signed in, the server tells the page its CSRF token.
    let (_, me) = call(http.get(s.api("/server")).header("cookie", &session)).await;
    assert_eq!(me["signed_in"], true, "{me}");
    let csrf = me["csrf"].as_str().unwrap().to_string();
    let (_, anonymous) = call(http.get(s.api("/server"))).await;
    assert_eq!(anonymous["signed_in"], false);
    assert_eq!(anonymous["csrf"], Value::Null);

    // Without a cookie: 401. The cookie alone: 403 (a forged form could
    // carry it). The cookie with the CSRF header: done.
    let (status, _) = call(http.post(&pause).body("{}")).await;
    assert_eq!(status, 401);
    let (status, e) = call(http.post(&pause).header("cookie", &session).body("{}")).await;
    assert_eq!((status, e["error"].as_str()), (403, Some("csrf")), "{e}");
    let (status, e) = call(
        http.post(&pause)
            .header("cookie", &session)
            .header("x-millrace-csrf", "0".repeat(64))
            .body("{}"),
    )
    .await;
    assert_eq!(status, 403, "a wrong CSRF token: {e}");
    let c = client(&prefix).await;
    assert!(!c.is_group_paused("orders", "billing").await.unwrap());
    let (status, e) = call(
        http.post(&pause)
            .header("cookie", &session)
            .header("x-millrace-csrf", &csrf)
            .body("{}"),
    )
    .await;
    assert_eq!(status, 200, "{e}");
    assert!(c.is_group_paused("orders", "billing").await.unwrap());

    // The bearer token works without any of that (API clients).
    let (status, _) = call(
        http.post(s.api("/topics/orders/groups/billing/resume"))
            .bearer_auth(token)
            .body("{}"),
    )
    .await;
    assert_eq!(status, 200);

    // Signed out, the cookie is worth nothing.
    let r = http
        .post(format!("{}/logout", s.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _) = call(
        http.post(&pause)
            .header("cookie", &session)
            .header("x-millrace-csrf", &csrf)
            .body("{}"),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_another_site_and_rebound_host_names_are_refused() {
    let prefix = support::unique_prefix("serve-xsite");
    with_group(&prefix).await;
    // No token: a loopback server a local page could otherwise post to.
    let s = serve(&support::shared_url(), &prefix, &[]).await;
    let http = http();
    let pause = s.api("/topics/orders/groups/billing/pause");
    let c = client(&prefix).await;
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let (status, e) = call(http.post(&pause).header(name, value).body("{}")).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (403, Some("cross_site")),
            "{name}: {value}: {e}"
        );
    }
    assert!(!c.is_group_paused("orders", "billing").await.unwrap());
    // The control: the page's own origin (as a browser sends it) goes
    // through, and so does a client that sends no Origin (curl).
    let (status, e) = call(
        http.post(&pause)
            .header("origin", &s.base)
            .header("sec-fetch-site", "same-origin")
            .body("{}"),
    )
    .await;
    assert_eq!(status, 200, "{e}");
    assert!(c.is_group_paused("orders", "billing").await.unwrap());
    let (status, _) = call(
        http.post(s.api("/topics/orders/groups/billing/resume"))
            .body("{}"),
    )
    .await;
    assert_eq!(status, 200);

    // A name that was rebound to 127.0.0.1 gets nothing, not even reads.
    let port = s.base.rsplit(':').next().unwrap();
    let (status, e) = call(
        http.get(s.api("/topics"))
            .header("host", format!("evil.example:{port}")),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (421, Some("wrong_host")),
        "{e}"
    );
    let (status, _) = call(
        http.get(s.api("/topics"))
            .header("host", format!("localhost:{port}")),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_scripts_are_served_with_a_strict_policy() {
    let prefix = support::unique_prefix("serve-page");
    let s = serve(&support::shared_url(), &prefix, &[]).await;
    let r = http().get(format!("{}/", s.base)).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-eval") && !csp.contains("script-src 'unsafe-inline'"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    // No inline script, nothing from elsewhere.
    assert!(!page.contains("<script>"), "inline script");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "an outside address"
    );
    for script in ["ui.js", "topic.js", "admin.js", "app.js"] {
        assert!(page.contains(&format!("src=\"{script}\"")), "{script}");
        let r = http()
            .get(format!("{}/{script}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{script}");
        // The SVG namespace is a name, not an address fetched.
        let js = r
            .text()
            .await
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
        assert!(!js.contains("innerHTML"), "{script} writes HTML");
        assert!(
            !js.contains("https://") && !js.contains("http://"),
            "{script} fetches elsewhere"
        );
    }
    let r = http()
        .get(format!("{}/nope.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_openapi_document_is_served() {
    let prefix = support::unique_prefix("serve-openapi");
    with_group(&prefix).await;
    let s = serve(&support::shared_url(), &prefix, &[]).await;
    let http = http();
    let (status, doc) = call(http.get(s.api("/openapi.json"))).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = path
            .replace("{topic}", "orders")
            .replace("{group}", "billing")
            .replace("{id}", "0:0:1-0")
            .replace("{name}", "nope");
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(op["operationId"].is_string(), "{method} {path}");
            let req = match method.as_str() {
                "get" => http.get(s.api(&url)),
                "post" => http.post(s.api(&url)).body("{}"),
                "delete" => http.delete(s.api(&url)),
                other => panic!("{other} {path}"),
            };
            // An operation the router does not have answers 404 or 405
            // with no body; the API's own answers are JSON.
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                serde_json::from_str::<Value>(&body).is_ok(),
                "{method} {path}: {status} {body:?}"
            );
            // Every status it answers with is one the document lists.
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{method} {path} answered {status}, not in the document: {body}"
            );
        }
    }
    assert_eq!(operations, 20);
    // The control: a path the router does not have is not JSON.
    let r = http.get(s.api("/nothing/here")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
}
