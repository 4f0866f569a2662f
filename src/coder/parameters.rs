//! A template's parameters as Coder checks a new workspace's values, so that `check` and the
//! start of a run refuse what Coder would refuse, per parameter and in Coder's words, before
//! any workspace exists.
//!
//! Coder has two ways (coderd/wsbuilder/wsbuilder.go `getParameters`):
//! - **dynamic parameters** (the default since v2.24, a template's
//!   `use_classic_parameter_flow` false): the server evaluates the template
//!   (coderd/dynamicparameters), and `POST /templateversions/{id}/dynamic-parameters/evaluate`
//!   answers the same diagnostics a create would meet, per parameter. We ask it.
//! - **the classic flow**: codersdk/richparameters.go `ValidateWorkspaceBuildParameter` on the
//!   version's rich parameters, with terraform-provider-coder's `Validation.Valid`. We apply
//!   those rules here, also for a Coder that lacks the evaluate route.
//!
//! What Coder applies is not always what a parameter declares: a template version imported
//! without dynamic-parameter metadata (an echo template, an old import) is rendered from its
//! stored parameters, and coderd/dynamicparameters/static.go keeps their `validation` block
//! only when it has an error, regex or monotonic rule, so a number's bare min/max is not
//! checked there (v2.36.1 creates with `cpu = "99"` where max is 8, and with `cpu = "two"`),
//! and the classic flow reads its parameters through the same conversion. Coder is
//! followed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, Client};

/// `codersdk.TemplateVersionParameter`: what the classic rules read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TemplateVersionParameter {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub form_type: String,
    #[serde(default)]
    pub default_value: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub options: Vec<ParameterOption>,
    #[serde(default)]
    pub validation_regex: String,
    #[serde(default)]
    pub validation_error: String,
    #[serde(default)]
    pub validation_min: Option<i64>,
    #[serde(default)]
    pub validation_max: Option<i64>,
    #[serde(default)]
    pub validation_monotonic: String,
}

/// `codersdk.TemplateVersionParameterOption`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ParameterOption {
    #[serde(default)]
    pub name: String,
    pub value: String,
}

/// `codersdk.DynamicParametersRequest`: one evaluation of the form.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DynamicParametersRequest {
    pub id: i64,
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Whose form it is (templates read `coder_workspace_owner`); coderd answers "Failed to
    /// fetch workspace owner" without it on the evaluate route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
}

/// `codersdk.DynamicParametersResponse`, the fields we decide on.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DynamicParametersResponse {
    pub id: i64,
    #[serde(default)]
    pub diagnostics: Vec<FriendlyDiagnostic>,
    #[serde(default)]
    pub parameters: Vec<PreviewParameter>,
}

/// `codersdk.PreviewParameter`, the fields we decide on.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PreviewParameter {
    pub name: String,
    #[serde(default)]
    pub value: NullHclString,
    #[serde(default)]
    pub diagnostics: Vec<FriendlyDiagnostic>,
}

/// `codersdk.NullHCLString`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NullHclString {
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub valid: bool,
}

/// `codersdk.FriendlyDiagnostic`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FriendlyDiagnostic {
    /// `error` or `warning`.
    pub severity: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub detail: String,
}

impl FriendlyDiagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == "error"
    }

    /// As coderd words it in a refused create (`DiagnosticErrorString`: "summary; detail").
    pub fn text(&self) -> String {
        if self.detail.is_empty() {
            self.summary.clone()
        } else {
            format!("{}; {}", self.summary, self.detail)
        }
    }
}

/// One value Coder would refuse: the parameter (none for the form as a whole) and Coder's
/// words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub parameter: Option<String>,
    pub message: String,
}

impl DynamicParametersResponse {
    /// Every error diagnostic of the answer, the form's own first.
    pub fn refusals(&self) -> Vec<Refusal> {
        let top = self
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| Refusal {
                parameter: None,
                message: d.text(),
            });
        let per = self.parameters.iter().flat_map(|p| {
            p.diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| Refusal {
                    parameter: Some(p.name.clone()),
                    message: d.text(),
                })
        });
        top.chain(per).collect()
    }
}

impl Client {
    /// `POST /templateversions/{id}/dynamic-parameters/evaluate`: the form evaluated once with
    /// `inputs`, as `owner` would see it.
    pub async fn evaluate_parameters(
        &self,
        version: Uuid,
        owner: Uuid,
        inputs: &BTreeMap<String, String>,
    ) -> Result<DynamicParametersResponse, ApiError> {
        self.post(
            "/api/v2/templateversions/{templateversion}/dynamic-parameters/evaluate",
            &format!("/api/v2/templateversions/{version}/dynamic-parameters/evaluate"),
            &DynamicParametersRequest {
                id: 0,
                inputs: inputs.clone(),
                owner_id: Some(owner),
            },
        )
        .await
    }
}

/// codersdk `ValidateWorkspaceBuildParameter` for a new workspace (no previous build): Coder's
/// message when it would refuse `value` (none: the parameter is left to its default).
pub fn classic_check(p: &TemplateVersionParameter, value: Option<&str>) -> Result<(), String> {
    classic_rules(p, value.unwrap_or_default()).map_err(|e| {
        let name = if p.display_name.is_empty() {
            &p.name
        } else {
            &p.display_name
        };
        format!("can't validate build parameter {name:?}: {e}")
    })
}

fn classic_rules(p: &TemplateVersionParameter, given: &str) -> Result<(), String> {
    if p.required && given.is_empty() {
        return Err("parameter value is required".into());
    }
    let value = if given.is_empty() {
        p.default_value.as_str()
    } else {
        given
    };
    if !p.options.is_empty() && !in_option_set(p, value) {
        let values: Vec<&str> = p.options.iter().map(|o| o.value.as_str()).collect();
        return Err(format!(
            "parameter value must match one of options: [{}]",
            values.join(" ")
        ));
    }
    // The version's stored parameter passes through coder/preview's type on its way here
    // (coderd/wsbuilder `getClassicParameters` → db2sdk.TemplateVersionParameterFromPreview),
    // which keeps its validation block only when the block has an error, a regex or a
    // monotonic rule (coderd/dynamicparameters/static.go): bare bounds are never checked.
    let block = !p.validation_error.is_empty()
        || !p.validation_regex.is_empty()
        || !p.validation_monotonic.is_empty();
    let (min, max) = if block {
        (p.validation_min, p.validation_max)
    } else {
        (None, None)
    };
    let enabled = !p.validation_regex.is_empty()
        || min.is_some()
        || max.is_some()
        || !p.validation_monotonic.is_empty()
        || p.kind == "bool"
        || p.kind == "list(string)";
    if !enabled {
        return Ok(());
    }
    Validation {
        min,
        max,
        regex: &p.validation_regex,
        error: &p.validation_error,
        monotonic: &p.validation_monotonic,
    }
    .valid(&p.kind, value)
}

/// codersdk `inOptionSet`: a multi-select `list(string)` checks each element.
fn in_option_set(p: &TemplateVersionParameter, value: &str) -> bool {
    let known = |v: &str| p.options.iter().any(|o| o.value == v);
    if p.kind == "list(string)" && p.form_type == "multi-select" {
        return serde_json::from_str::<Vec<String>>(value)
            .is_ok_and(|items| items.iter().all(|i| known(i)));
    }
    known(value)
}

/// terraform-provider-coder's `Validation` (provider/parameter.go), for a first build (no
/// previous value, so monotonicity has nothing to compare with).
pub struct Validation<'a> {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub regex: &'a str,
    pub error: &'a str,
    pub monotonic: &'a str,
}

impl Validation<'_> {
    /// `Validation.Valid`: the provider's message when `value` of type `kind` fails.
    pub fn valid(&self, kind: &str, value: &str) -> Result<(), String> {
        if kind != "number" {
            if self.min.is_some() {
                return Err(format!("a min cannot be specified for a {kind} type"));
            }
            if self.max.is_some() {
                return Err(format!("a max cannot be specified for a {kind} type"));
            }
            if !self.monotonic.is_empty() {
                return Err(format!(
                    "monotonic validation can only be specified for number types, not {kind} types"
                ));
            }
        }
        if kind != "string" && !self.regex.is_empty() {
            return Err(format!("a regex cannot be specified for a {kind} type"));
        }
        match kind {
            "bool" if value != "true" && value != "false" => {
                Err(r#"boolean value can be either "true" or "false""#.into())
            }
            "string" if !self.regex.is_empty() => {
                let re = regex::Regex::new(self.regex)
                    .map_err(|e| format!("compile regex {:?}: {e}", self.regex))?;
                if self.error.is_empty() {
                    return Err("an error must be specified with a regex validation".into());
                }
                if re.is_match(value) {
                    Ok(())
                } else {
                    Err(format!(
                        "{} (value {value:?} does not match {:?})",
                        self.error, self.regex
                    ))
                }
            }
            "number" => {
                let rendered = || {
                    (!self.error.is_empty()).then(|| {
                        self.error
                            .replace("{min}", &self.min.unwrap_or(0).to_string())
                            .replace("{max}", &self.max.unwrap_or(0).to_string())
                            .replace("{value}", value)
                    })
                };
                // Go's strconv.Atoi: an optional sign and decimal digits.
                let Ok(num) = value.parse::<i64>() else {
                    return Err(rendered().unwrap_or(format!("value {value:?} is not a number")));
                };
                if let Some(min) = self.min.filter(|m| num < *m) {
                    return Err(
                        rendered().unwrap_or(format!("value {num} is less than the minimum {min}"))
                    );
                }
                if let Some(max) = self.max.filter(|m| num > *m) {
                    return Err(
                        rendered().unwrap_or(format!("value {num} is more than the maximum {max}"))
                    );
                }
                match self.monotonic {
                    "" | "increasing" | "decreasing" => Ok(()),
                    _ => Err(
                        r#"number monotonicity can be either "increasing" or "decreasing""#.into(),
                    ),
                }
            }
            "list(string)" if serde_json::from_str::<Vec<String>>(value).is_err() => {
                Err(format!("value {value:?} is not valid list of strings"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(kind: &str) -> TemplateVersionParameter {
        TemplateVersionParameter {
            name: "p".into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    #[test]
    fn classic_rules_word_refusals_as_coder_does() {
        let mut region = param("string");
        region.options = ["eu", "us"]
            .map(|v| ParameterOption {
                name: v.into(),
                value: v.into(),
            })
            .into();
        region.default_value = "eu".into();
        assert_eq!(classic_check(&region, Some("us")), Ok(()));
        assert_eq!(classic_check(&region, None), Ok(()));
        assert_eq!(
            classic_check(&region, Some("mars")).unwrap_err(),
            r#"can't validate build parameter "p": parameter value must match one of options: [eu us]"#
        );

        let mut image = param("string");
        image.display_name = "Image".into();
        image.validation_regex = "^[a-z]+$".into();
        image.validation_error = "lowercase only".into();
        assert_eq!(
            classic_check(&image, Some("BAD")).unwrap_err(),
            r#"can't validate build parameter "Image": lowercase only (value "BAD" does not match "^[a-z]+$")"#
        );

        // Bare bounds are not enforced (coderd v2.36.1 creates with these), bounds with an
        // error message are.
        let mut cpu = param("number");
        cpu.validation_min = Some(1);
        cpu.validation_max = Some(8);
        for v in ["4", "99", "two"] {
            assert!(classic_check(&cpu, Some(v)).is_ok(), "{v}");
        }
        cpu.validation_error = "between {min} and {max}, not {value}".into();
        assert!(
            classic_check(&cpu, Some("two"))
                .unwrap_err()
                .ends_with("between 1 and 8, not two")
        );
        assert!(
            classic_check(&cpu, Some("0"))
                .unwrap_err()
                .ends_with("between 1 and 8, not 0")
        );

        let mut flag = param("bool");
        flag.default_value = "false".into();
        assert!(classic_check(&flag, Some("yes")).is_err());
        assert!(classic_check(&flag, None).is_ok());

        let mut needed = param("string");
        needed.required = true;
        assert!(
            classic_check(&needed, None)
                .unwrap_err()
                .ends_with("parameter value is required")
        );
    }
}
