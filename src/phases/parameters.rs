//! `parameters`: what a user's browser does before `create` — the template's create form
//! evaluated as the workspace's owner. Runs before `create`, or alone: a walk of
//! `["parameters"]` is a form load that creates nothing.
//!
//! On Coder's dynamic parameters (the default since v2.24) the form is a websocket,
//! `GET /templateversions/{id}/dynamic-parameters` (coderd/parameters.go): Coder sends a
//! first preview (id -1) unasked, then answers each `{"id": N, "inputs": {...}}` with the
//! preview for N, evaluating the template's Terraform with coder/preview each time (the
//! CPU-heavy part of coderd this loads). Timed apart: `parameters.initial` (dial to first
//! preview) and `parameters.change` (the scenario's values sent to their answer). It fails
//! with `invalid_parameters` when the answer has an error diagnostic, for the form or for a
//! parameter (coderd puts a bad value's message on that parameter), or leaves a scenario
//! value without a valid value.
//!
//! On the classic flow the form is the version's rich parameters (`parameters.initial`),
//! checked with Coder's classic rules ([`crate::coder::parameters`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Ctx, Leaves, PhaseDef, PhaseError, Reason, Stage, Walk};
use crate::coder::parameters::{
    DynamicParametersRequest, DynamicParametersResponse, classic_check,
};

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(60),
    runs_in: &[Stage::None],
    leaves: Leaves::Same,
    judges_parameters: true,
    run: |ctx, walk| Box::pin(run(ctx, walk)),
    ..PhaseDef::BASE
};

/// The id of the scenario's values, as the browser numbers its requests.
const CHANGE: i64 = 1;

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

async fn run(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let b = &ctx.blueprint;
    let inputs: BTreeMap<String, String> = b
        .parameters
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    if b.classic_parameters {
        let t = Instant::now();
        let params = ctx.client.rich_parameters(b.version_id).await?;
        walk.sub_timings.insert("initial", ms(t));
        let refused: Vec<String> = params
            .iter()
            .filter_map(|p| {
                classic_check(p, inputs.get(&p.name).map(String::as_str))
                    .err()
                    .map(|e| format!("parameter {:?}: {e}", p.name))
            })
            .collect();
        return match refused.is_empty() {
            true => Ok(()),
            false => Err(PhaseError::new(
                Reason::InvalidParameters,
                refused.join("; "),
            )),
        };
    }
    let t = Instant::now();
    let mut form = ctx.client.open_form(b.version_id).await?;
    let first = next(&mut form, -1).await?;
    walk.sub_timings.insert("initial", ms(t));
    let _ = first;
    let t = Instant::now();
    form.send(&DynamicParametersRequest {
        id: CHANGE,
        inputs: inputs.clone(),
        owner_id: None,
    })
    .await?;
    let answer = next(&mut form, CHANGE).await?;
    walk.sub_timings.insert("change", ms(t));
    form.close().await;
    judge(&answer, &inputs)
}

/// Reads previews until the one answering `id`.
async fn next(
    form: &mut crate::coder::wsjson::Form,
    id: i64,
) -> Result<DynamicParametersResponse, PhaseError> {
    loop {
        match form.next().await? {
            Some(r) if r.id == id => return Ok(r),
            Some(_) => continue,
            None => {
                return Err(PhaseError::new(
                    Reason::ProtocolError,
                    format!("Coder closed the form before answering request {id}"),
                ));
            }
        }
    }
}

/// What Coder's answer says of the scenario's values.
fn judge(
    answer: &DynamicParametersResponse,
    inputs: &BTreeMap<String, String>,
) -> Result<(), PhaseError> {
    let mut refused: Vec<String> = answer
        .refusals()
        .into_iter()
        .map(|r| match r.parameter {
            Some(p) => format!("parameter {p:?}: {}", r.message),
            None => r.message,
        })
        .collect();
    for name in inputs.keys() {
        match answer.parameters.iter().find(|p| &p.name == name) {
            None => refused.push(format!("parameter {name:?} is not on the form")),
            Some(p) if !p.value.valid => {
                refused.push(format!("parameter {name:?} has no valid value on the form"))
            }
            Some(_) => {}
        }
    }
    match refused.is_empty() {
        true => Ok(()),
        false => Err(PhaseError::new(
            Reason::InvalidParameters,
            refused.join("; "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_judged_by_its_error_diagnostics_and_the_values_asked_for() {
        let answer: DynamicParametersResponse = serde_json::from_value(serde_json::json!({
            "id": 1,
            "diagnostics": [{"severity": "warning", "summary": "old version", "detail": ""}],
            "parameters": [
                {"name": "region", "value": {"value": "mars", "valid": true},
                 "diagnostics": [{"severity": "error", "summary": "Value must be a valid option",
                                  "detail": "the value \"mars\" must be defined as one of options"}]},
                {"name": "cpu", "value": {"value": "2", "valid": true}, "diagnostics": []},
            ],
        }))
        .unwrap();
        let inputs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let e = judge(&answer, &inputs(&[("region", "mars")])).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidParameters);
        assert_eq!(
            e.message,
            "parameter \"region\": Value must be a valid option; the value \"mars\" must be defined as one of options"
        );
        let e = judge(&answer, &inputs(&[("nope", "1")])).unwrap_err();
        assert!(
            e.message.contains("parameter \"nope\" is not on the form"),
            "{}",
            e.message
        );
        let fine: DynamicParametersResponse = serde_json::from_value(serde_json::json!({
            "id": 1, "diagnostics": [],
            "parameters": [{"name": "cpu", "value": {"value": "4", "valid": true}, "diagnostics": []}],
        }))
        .unwrap();
        assert!(judge(&fine, &inputs(&[("cpu", "4")])).is_ok());
    }
}
