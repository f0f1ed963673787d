//! The front door's own answers, as small HTML pages: what a person sees instead of a
//! connection error.

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, head_extra: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>{head_extra}\
         <style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;\
         padding:0 1rem;line-height:1.5}}code,pre{{background:#f3f3f3;padding:0 .3em}}</style>\
         </head><body>{body}</body></html>\n",
        title = escape(title),
    )
}

/// No env (or no such service) behind this name: what exists and how to make one.
/// `envs`: (name, URL) of the envs that exist.
pub fn not_found(what: &str, envs: &[(String, String)]) -> String {
    let list = if envs.is_empty() {
        "<p>No environments exist yet.</p>".to_string()
    } else {
        let items: String = envs
            .iter()
            .map(|(name, url)| format!("<li><a href=\"{}\">{}</a></li>", escape(url), escape(name)))
            .collect();
        format!("<p>Environments that exist:</p><ul>{items}</ul>")
    };
    page(
        "Not found",
        "",
        &format!(
            "<h1>{}</h1>{list}<p>Create one with <code>slipway env up &lt;branch&gt; \
             --repo &lt;repo&gt;</code> (or <code>/slipway env up</code> in chat or on a \
             pull request).</p>",
            escape(what)
        ),
    )
}

/// The env exists but cannot answer: why, and where its logs are.
pub fn unavailable(env: &str, reason: &str, logs_url: &str) -> String {
    page(
        "Unavailable",
        "",
        &format!(
            "<h1>{} is not available</h1><pre>{}</pre><p><a href=\"{}\">Logs</a> · \
             <code>slipway env status {}</code></p>",
            escape(env),
            escape(reason),
            escape(logs_url),
            escape(env),
        ),
    )
}

/// The env is starting: the browser asks again in a moment.
pub fn waking(env: &str, phase: &str) -> String {
    page(
        "Waking up",
        "<meta http-equiv=\"refresh\" content=\"2\">",
        &format!(
            "<h1>{} is waking up</h1><p>It is {}; this page reloads by itself and shows the \
             environment as soon as it is ready.</p>",
            escape(env),
            escape(&phase.to_lowercase()),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let page = not_found("no <env>", &[("a&b".into(), "http://x/\"".into())]);
        assert!(page.contains("no &lt;env&gt;"));
        assert!(page.contains("a&amp;b"));
        assert!(page.contains("http://x/&quot;"));
        assert!(waking("shop", "Starting").contains("http-equiv=\"refresh\""));
        assert!(unavailable("shop", "exit <1>", "http://s/logs").contains("exit &lt;1&gt;"));
    }
}
