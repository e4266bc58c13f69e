//! Body templates: a target may turn the trigger into another system's JSON (a chat
//! webhook, GitHub's `repository_dispatch`) with a minijinja template. The template sees
//! `trigger` (the trigger as published) and `target` (the target's name); printing an
//! undefined value is an error (through `tojson` it is `null`), nothing is auto-escaped (use `| tojson` for every value), and the
//! output must be JSON, or the trigger is dead-lettered for that target.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// The name the template is registered under.
const NAME: &str = "body";

/// A parsed body template.
pub struct BodyTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for BodyTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyTemplate")
    }
}

/// Why a body could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template rendering failed: {0}")]
    Render(String),
    #[error("template output is not JSON: {0}")]
    NotJson(String),
}

impl BodyTemplate {
    /// Parses `source`; a syntax error is returned as text (with its line).
    pub fn parse(source: String) -> Result<BodyTemplate, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.add_template_owned(NAME, source)
            .map_err(|e| e.to_string())?;
        Ok(BodyTemplate { env })
    }

    /// The body for `trigger` (its JSON value), checked to be JSON.
    pub fn render(
        &self,
        trigger: &serde_json::Value,
        target: &str,
    ) -> Result<Vec<u8>, TemplateError> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| TemplateError::Render(e.to_string()))?;
        let text = template
            .render(minijinja::context! { trigger => trigger, target => target })
            .map_err(|e| TemplateError::Render(e.to_string()))?;
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            return Err(TemplateError::NotJson(e.to_string()));
        }
        Ok(text.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_json_and_refuses_what_is_not() {
        let t = BodyTemplate::parse(
            r#"{"text": {{ ("PR " ~ trigger.pr ~ " of " ~ target) | tojson }}}"#.into(),
        )
        .unwrap();
        let body = t.render(&serde_json::json!({"pr": 7}), "chat").unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"text": "PR 7 of chat"}"#
        );
        // A value with a quote stays JSON through tojson.
        let body = t.render(&serde_json::json!({"pr": "a\"b"}), "x").unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap();

        let raw = BodyTemplate::parse("{{ trigger.pr }} is not json".into()).unwrap();
        assert!(matches!(
            raw.render(&serde_json::json!({"pr": 1}), "x"),
            Err(TemplateError::NotJson(_))
        ));
        let undefined = BodyTemplate::parse("{\"a\": \"{{ trigger.nope }}\"}".into()).unwrap();
        assert!(matches!(
            undefined.render(&serde_json::json!({}), "x"),
            Err(TemplateError::Render(_))
        ));
        // Through tojson an undefined value is null (minijinja's choice, even when strict).
        let through = BodyTemplate::parse("[{{ trigger.nope | tojson }}]".into()).unwrap();
        assert_eq!(
            through.render(&serde_json::json!({}), "x").unwrap(),
            b"[null]"
        );
        assert!(BodyTemplate::parse("{{ unclosed".into()).is_err());
    }
}
