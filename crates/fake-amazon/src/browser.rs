//! A scripted person at a consent page: loads it, fills the form, clicks Approve or Deny, and
//! reports where Amazon redirected; or follows one redirect step ([`follow`]). Tests use it
//! where a real user would use a browser.

use std::collections::HashMap;

/// What the person does on the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Click Approve, keeping the page's default selling partner or advertiser.
    Approve,
    /// Click Approve after typing this selling partner id or advertiser id.
    ApproveAs(String),
    /// Click Deny.
    Deny,
}

/// Why the consent could not be completed.
#[derive(Debug)]
pub struct BrowserError(pub String);

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Loads `consent_url`, submits its form with `choice`, and returns the `Location` Amazon
/// redirected to (the app's redirect URI with the code or the error). Does not follow it.
pub async fn consent(consent_url: &str, choice: Choice) -> Result<String, BrowserError> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BrowserError(e.to_string()))?;
    let page = http
        .get(consent_url)
        .send()
        .await
        .map_err(|e| BrowserError(format!("loading the consent page: {e}")))?;
    if let Some(location) = location(&page) {
        return Ok(location); // approved at once (--auto-approve)
    }
    let status = page.status();
    let html = page.text().await.map_err(|e| BrowserError(e.to_string()))?;
    if !status.is_success() {
        return Err(BrowserError(format!(
            "the consent page answered {status}: {html}"
        )));
    }
    let form_start = html
        .find("<form")
        .ok_or_else(|| BrowserError(format!("no form on the page: {html}")))?;
    let form = &html[form_start..];
    let action = attribute(form, "action").unwrap_or_default();
    let action = url::Url::parse(consent_url)
        .and_then(|base| base.join(&action))
        .map_err(|e| BrowserError(format!("bad form action: {e}")))?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        if let Some(name) = attribute(tag, "name") {
            fields.push((name, attribute(tag, "value").unwrap_or_default()));
        }
    }
    let button = match &choice {
        Choice::Deny => "deny",
        _ => "approve",
    };
    if let Choice::ApproveAs(id) = &choice {
        // The page's one text input names the principal.
        for input in form.split("<input").skip(1) {
            let tag = &input[..input.find('>').unwrap_or(input.len())];
            if attribute(tag, "type").as_deref() == Some("text") {
                let name = attribute(tag, "name").unwrap_or_default();
                for field in fields.iter_mut().filter(|(n, _)| *n == name) {
                    field.1 = id.clone();
                }
            }
        }
    }
    fields.push(("action".into(), button.into()));
    let response = http
        .post(action)
        .form(&fields)
        .send()
        .await
        .map_err(|e| BrowserError(format!("submitting the consent form: {e}")))?;
    location(&response).ok_or_else(|| {
        BrowserError(format!(
            "no redirect after the form, status {}",
            response.status()
        ))
    })
}

/// GETs `url` without following redirects and returns the `Location` it redirected to: e.g.
/// the `amazon_callback_uri` the app sent the browser to in the Appstore-initiated workflow,
/// which redirects to the app's redirect URI with the code. Any other answer is an error that
/// carries the status and the page.
pub async fn follow(url: &str) -> Result<String, BrowserError> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BrowserError(e.to_string()))?;
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| BrowserError(format!("loading {url}: {e}")))?;
    if let Some(location) = location(&response) {
        return Ok(location);
    }
    let status = response.status();
    let page = response.text().await.unwrap_or_default();
    Err(BrowserError(format!(
        "{url} answered {status} without a redirect: {page}"
    )))
}

/// The query parameters of a URL.
pub fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn location(response: &reqwest::Response) -> Option<String> {
    response.status().is_redirection().then(|| {
        response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    })
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(html_escape::decode_html_entities(&tag[start..end]).into_owned())
}

impl std::error::Error for BrowserError {}
