//! The simulated template's parameters and how Coder evaluates them: the `docker` template is
//! one with dynamic-parameter metadata, so, as in coderd, a value is checked by
//! terraform-provider-coder's `Parameter.ValidateInput` through coder/preview
//! (`types/parameter.go` `ParameterData.Valid`), every `validation` block applies, and a bad
//! value comes back as a diagnostic on its parameter:
//!
//! - `POST /templateversions/{id}/dynamic-parameters/evaluate` (coderd/parameters.go
//!   `handleParameterEvaluate`) answers the form with per-parameter diagnostics, and a
//!   top-level "Failed to fetch workspace owner" without an owner
//!   (coderd/dynamicparameters/render.go);
//! - a create with a bad value is refused as coderd/dynamicparameters/resolver.go
//!   `ResolveParameters` refuses it: 400 "Unable to validate parameters", one validation per
//!   parameter, sorted by name, its detail "summary; detail" (`DiagnosticError.Response`).

use std::collections::BTreeMap;

use serde_json::json;

use super::types::{TemplateVersionParameter, TemplateVersionParameterOption};
use crate::coder::ValidationError;
use crate::coder::parameters::{FriendlyDiagnostic, Validation};

/// The `docker` template's parameters: an image checked by a regex, a region from options,
/// and a CPU count within bounds; each has a default, so a scenario may leave any out.
pub fn docker_template() -> Vec<TemplateVersionParameter> {
    let option = |v: &str, name: &str| TemplateVersionParameterOption {
        name: name.into(),
        description: String::new(),
        value: v.into(),
        icon: String::new(),
    };
    vec![
        TemplateVersionParameter {
            name: "image".into(),
            display_name: "Image".into(),
            description: "Container image of the workspace".into(),
            kind: "string".into(),
            form_type: "input".into(),
            default_value: "codercom/enterprise-base:ubuntu".into(),
            validation_regex: "^[a-z0-9][a-z0-9._/:-]*$".into(),
            validation_error: "an image reference in lowercase".into(),
            ..TemplateVersionParameter::named("image")
        },
        TemplateVersionParameter {
            name: "region".into(),
            display_name: "Region".into(),
            description: "Where the workspace runs".into(),
            kind: "string".into(),
            form_type: "radio".into(),
            default_value: "eu".into(),
            options: vec![option("eu", "Europe"), option("us", "United States")],
            ..TemplateVersionParameter::named("region")
        },
        TemplateVersionParameter {
            name: "cpu".into(),
            display_name: "CPU".into(),
            description: "CPU cores".into(),
            kind: "number".into(),
            form_type: "input".into(),
            mutable: true,
            default_value: "2".into(),
            validation_min: Some(1),
            validation_max: Some(8),
            ..TemplateVersionParameter::named("cpu")
        },
    ]
    .into_iter()
    .map(|mut p| {
        p.description_plaintext = p.description.clone();
        p
    })
    .collect()
}

/// provider/parameter.go `ValidateInput` for a first build: the diagnostics of `value` (none
/// given: the default).
pub fn diagnostics(p: &TemplateVersionParameter, given: Option<&str>) -> Vec<FriendlyDiagnostic> {
    let error = |summary: String, detail: String| {
        vec![FriendlyDiagnostic {
            severity: "error".into(),
            summary,
            detail,
        }]
    };
    let has_validation = p.has_validation();
    let value = given.unwrap_or(&p.default_value);
    let name = if given.is_some() {
        "Value"
    } else {
        "Default value"
    };
    if !has_validation && given.is_none() && p.default_value.is_empty() {
        return vec![];
    }
    if !p.options.is_empty() && !p.options.iter().any(|o| o.value == value) {
        let extra = if value.is_empty() {
            ". The value is empty, did you forget to set it with a default or from user input?"
        } else {
            ""
        };
        return error(
            format!("{name} must be a valid option{extra}"),
            format!("the value {value:?} must be defined as one of options"),
        );
    }
    if has_validation {
        let v = Validation {
            min: p.validation_min,
            max: p.validation_max,
            regex: &p.validation_regex,
            error: &p.validation_error,
            monotonic: &p.validation_monotonic,
        };
        if let Err(detail) = v.valid(&p.kind, value) {
            return error(
                format!(
                    "Invalid parameter {} according to 'validation' block",
                    name.to_lowercase()
                ),
                detail,
            );
        }
    }
    let typed = match p.kind.as_str() {
        "number" => value
            .parse::<f64>()
            .map(|_| ())
            .map_err(|_| format!("{value:?} is not a number")),
        "bool" => matches!(
            value,
            "true" | "false" | "1" | "0" | "t" | "f" | "TRUE" | "FALSE"
        )
        .then_some(())
        .ok_or(format!("{value:?} is not a bool")),
        "list(string)" => serde_json::from_str::<Vec<String>>(value)
            .map(|_| ())
            .map_err(|_| format!("value {value:?} is not a valid list of strings")),
        _ => Ok(()),
    };
    match typed {
        Ok(()) => vec![],
        Err(detail) => error(
            format!("Parameter value is not of type {:?}", p.kind),
            detail,
        ),
    }
}

/// The evaluated form as `codersdk.DynamicParametersResponse` (the answer to request `id`);
/// `owner_known` false: only the owner diagnostic, as coderd's renderer answers.
pub fn evaluate(
    params: &[TemplateVersionParameter],
    id: i64,
    inputs: &BTreeMap<String, String>,
    owner_known: bool,
) -> serde_json::Value {
    if !owner_known {
        return json!({
            "id": id,
            "diagnostics": [{
                "severity": "error",
                "summary": "Failed to fetch workspace owner",
                "detail": "Please check your permissions or the user may not exist.",
                "extra": {"code": "owner_not_found"},
            }],
            "parameters": null,
        });
    }
    let parameters: Vec<serde_json::Value> = params
        .iter()
        .enumerate()
        .map(|(order, p)| {
            let given = inputs.get(&p.name).map(String::as_str);
            let value = given.unwrap_or(&p.default_value);
            let diags: Vec<serde_json::Value> = diagnostics(p, given)
                .into_iter()
                .map(|d| json!({"severity": d.severity, "summary": d.summary, "detail": d.detail, "extra": {"code": ""}}))
                .collect();
            let validations: Vec<serde_json::Value> = if p.has_validation() {
                vec![json!({
                    "validation_error": p.validation_error,
                    "validation_regex": (!p.validation_regex.is_empty()).then_some(&p.validation_regex),
                    "validation_min": p.validation_min,
                    "validation_max": p.validation_max,
                    "validation_monotonic": (!p.validation_monotonic.is_empty()).then_some(&p.validation_monotonic),
                })]
            } else {
                vec![]
            };
            json!({
                "name": p.name,
                "display_name": p.display_name,
                "description": p.description,
                "type": p.kind,
                "form_type": p.form_type,
                "styling": {},
                "mutable": p.mutable,
                "default_value": {"value": p.default_value, "valid": true},
                "icon": p.icon,
                "options": p.options.iter().map(|o| json!({
                    "name": o.name,
                    "description": o.description,
                    "value": {"value": o.value, "valid": true},
                    "icon": o.icon,
                })).collect::<Vec<_>>(),
                "validations": validations,
                "required": p.required,
                "order": order,
                "ephemeral": p.ephemeral,
                "value": {"value": value, "valid": true},
                "diagnostics": diags,
            })
        })
        .collect();
    json!({"id": id, "diagnostics": [], "parameters": parameters})
}

/// What a create with `values` is refused with (`DiagnosticError.Response`'s validations,
/// sorted by parameter name), or nothing.
pub fn refusals(
    params: &[TemplateVersionParameter],
    values: &BTreeMap<String, String>,
) -> Vec<ValidationError> {
    let mut out: Vec<ValidationError> = params
        .iter()
        .filter_map(|p| {
            let diags = diagnostics(p, values.get(&p.name).map(String::as_str));
            let first = diags.first()?;
            Some(ValidationError {
                field: p.name.clone(),
                detail: if diags.len() == 1 {
                    first.text()
                } else {
                    format!(
                        "{}, and {} other diagnostic(s)",
                        first.text(),
                        diags.len() - 1
                    )
                },
            })
        })
        .collect();
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_with_providers_words() {
        let params = docker_template();
        let values = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(refusals(&params, &values(&[])).is_empty());
        assert!(refusals(&params, &values(&[("region", "us"), ("cpu", "8")])).is_empty());
        let r = refusals(
            &params,
            &values(&[("image", "BAD_Image"), ("region", "mars"), ("cpu", "99")]),
        );
        let said: Vec<(&str, &str)> = r
            .iter()
            .map(|v| (v.field.as_str(), v.detail.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                (
                    "cpu",
                    "Invalid parameter value according to 'validation' block; value 99 is more than the maximum 8"
                ),
                (
                    "image",
                    "Invalid parameter value according to 'validation' block; an image reference in lowercase (value \"BAD_Image\" does not match \"^[a-z0-9][a-z0-9._/:-]*$\")"
                ),
                (
                    "region",
                    "Value must be a valid option; the value \"mars\" must be defined as one of options"
                ),
            ]
        );
    }
}
