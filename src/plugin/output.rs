//! `-o json|yaml`: what the subcommands that list print for scripts, shaped as kubectl
//! prints it (one object, or a `v1` `List`), without managedFields.

use clap::ValueEnum;
use serde::Serialize;

use super::{PluginError, PluginResult};

/// A machine-readable output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// JSON, indented.
    Json,
    /// YAML.
    Yaml,
}

/// `value` in `format`, ending with a newline.
pub fn render(value: &impl Serialize, format: OutputFormat) -> PluginResult<String> {
    let unable = |e: String| PluginError::Unavailable(format!("rendering the output: {e}"));
    let mut text = match format {
        OutputFormat::Json => {
            serde_json::to_string_pretty(value).map_err(|e| unable(e.to_string()))?
        }
        OutputFormat::Yaml => serde_saphyr::to_string(value).map_err(|e| unable(e.to_string()))?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Objects as kubectl prints a list of them.
pub fn list(items: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    })
}

/// An object as JSON, without the managedFields kubectl hides too.
pub fn without_managed_fields(object: &impl Serialize) -> PluginResult<serde_json::Value> {
    let mut value = serde_json::to_value(object)
        .map_err(|e| PluginError::Unavailable(format!("rendering the output: {e}")))?;
    if let Some(metadata) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        metadata.remove("managedFields");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_read_back_to_the_same_value() {
        let object = serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": "ci", "managedFields": [{"manager": "kubectl-atk"}]},
            "status": {"phase": "Active"},
        });
        let value = list(vec![without_managed_fields(&object).expect("json")]);
        assert_eq!(
            value["items"][0]["metadata"],
            serde_json::json!({"name": "ci"})
        );
        let json = render(&value, OutputFormat::Json).expect("json");
        let yaml = render(&value, OutputFormat::Yaml).expect("yaml");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).expect("parses"),
            value
        );
        let from_yaml: serde_json::Value = serde_saphyr::from_str(&yaml).expect("parses");
        assert_eq!(from_yaml, value);
    }
}
