//! Before a run's first workspace: the template resolved, the scenario's parameters checked
//! as Coder would check them, and the clients of its test users. A run that cannot start
//! says why here, in words that tell the user what to do.

use crate::coder::{Client, WorkspaceBuildParameter};
use crate::config::Scenario;
use crate::phases::Blueprint;
use crate::phases::{PhaseError, Reason};

/// Resolves the template and checks the scenario's parameters against the template's.
pub async fn prepare(
    client: &Client,
    scenario: &Scenario,
    organization: Option<&str>,
) -> Result<Blueprint, PhaseError> {
    let me = client
        .me()
        .await
        .map_err(|e| explain_setup(e, "reading the current user"))?;
    let org = match organization {
        Some(o) => o.to_string(),
        None => me
            .organization_ids
            .first()
            .map(|id| id.to_string())
            .ok_or_else(|| {
                PhaseError::new(
                    Reason::Http4xx,
                    format!("user {:?} belongs to no organization", me.username),
                )
            })?,
    };
    let template = client
        .template_by_name(&org, &scenario.template)
        .await
        .map_err(|e| {
            explain_setup(
                e,
                &format!(
                    "looking up template {:?} in organization {org:?}",
                    scenario.template
                ),
            )
        })?;
    let params = client
        .rich_parameters(template.active_version_id)
        .await
        .map_err(|e| {
            explain_setup(
                e,
                &format!("reading the parameters of template {:?}", template.name),
            )
        })?;
    for name in scenario.parameters.keys() {
        if !params.iter().any(|p| &p.name == name) {
            let known: Vec<_> = params.iter().map(|p| p.name.as_str()).collect();
            return Err(PhaseError::new(
                Reason::Http4xx,
                format!(
                    "scenario {:?}: template {:?} has no parameter {name:?} (it has {known:?})",
                    scenario.name, template.name
                ),
            ));
        }
    }
    for p in &params {
        if p.required && p.default_value.is_empty() && !scenario.parameters.contains_key(&p.name) {
            return Err(PhaseError::new(
                Reason::Http4xx,
                format!(
                    "scenario {:?}: template {:?} requires parameter {:?}; add it to `parameters`",
                    scenario.name, template.name, p.name
                ),
            ));
        }
    }
    // A walk whose phases judge the values themselves (a form load) is not refused here.
    if !scenario.phases.iter().any(|p| p.def().judges_parameters) {
        refuse_values(client, scenario, &template, &params, me.id).await?;
    }
    Ok(Blueprint {
        template_id: template.id,
        classic_parameters: template.classic_parameters(),
        version_id: template.active_version_id,
        template_name: template.name,
        organization_id: template.organization_id,
        parameters: scenario
            .parameters
            .iter()
            .map(|(name, value)| WorkspaceBuildParameter {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    })
}

/// Refuses the scenario's parameter values that Coder would refuse at create, per parameter
/// and in Coder's words (see [`crate::coder::parameters`]): asked of Coder itself where the
/// template uses dynamic parameters, checked with Coder's classic rules otherwise.
async fn refuse_values(
    client: &Client,
    scenario: &Scenario,
    template: &crate::coder::Template,
    params: &[crate::coder::TemplateVersionParameter],
    owner: uuid::Uuid,
) -> Result<(), PhaseError> {
    use crate::coder::parameters::{Refusal, classic_check};
    let classic = |params: &[crate::coder::TemplateVersionParameter]| -> Vec<Refusal> {
        params
            .iter()
            .filter_map(|p| {
                let value = scenario.parameters.get(&p.name).map(String::as_str);
                classic_check(p, value).err().map(|message| Refusal {
                    parameter: Some(p.name.clone()),
                    message,
                })
            })
            .collect()
    };
    let refusals = if template.classic_parameters() {
        classic(params)
    } else {
        let inputs = scenario
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match client
            .evaluate_parameters(template.active_version_id, owner, &inputs)
            .await
        {
            Ok(answer) => answer.refusals(),
            // A Coder without the route predates dynamic parameters.
            Err(e) if e.is_route_missing() => classic(params),
            Err(e) => {
                return Err(explain_setup(
                    e,
                    &format!("evaluating the parameters of template {:?}", template.name),
                ));
            }
        }
    };
    if refusals.is_empty() {
        return Ok(());
    }
    let said: Vec<String> = refusals
        .iter()
        .map(|r| match &r.parameter {
            Some(p) => match scenario.parameters.get(p) {
                Some(v) => format!("parameter {p:?} = {v:?}: {}", r.message),
                None => format!("parameter {p:?} (its default): {}", r.message),
            },
            None => r.message.clone(),
        })
        .collect();
    Err(PhaseError::new(
        Reason::InvalidParameters,
        format!(
            "scenario {:?}: template {:?} would refuse these values: {}",
            scenario.name,
            template.name,
            said.join("; ")
        ),
    ))
}

/// Turns a setup call's error into a message that says what to do.
fn explain_setup(e: crate::coder::ApiError, doing: &str) -> PhaseError {
    let hint = match e.status() {
        Some(401) => {
            " — Coder refused the session token: check CODER_SESSION_TOKEN or [coder].token_file"
        }
        Some(403) => {
            " — the token's user may not do this: use a token of a user with the template's access"
        }
        Some(404) => " — not found: check the name in the configuration",
        _ => "",
    };
    PhaseError::new(e.reason(), format!("{doing}: {e}{hint}"))
}

/// Where a run finds what it sets up with.
#[derive(Default, Clone, Copy)]
pub struct Setup<'a> {
    /// `[coder] organization`; none: the token user's first.
    pub organization: Option<&'a str>,
    /// Test-user pools kept across runs (the daemon's); none: a pool for this run alone.
    pub users: Option<&'a crate::users::Pools>,
    /// The run's id, when the caller named it first (a run started through the API);
    /// none: a new one.
    pub run_id: Option<&'a str>,
}

/// Clients acting as the scenario's test users, when it has `[scenario.users]`.
pub(crate) async fn owners(
    client: &Client,
    scenario: &Scenario,
    setup: Setup<'_>,
    organization: uuid::Uuid,
) -> Result<Vec<Client>, PhaseError> {
    let Some(spec) = &scenario.users else {
        return Ok(Vec::new());
    };
    let own = crate::users::Pools::default();
    setup
        .users
        .unwrap_or(&own)
        .clients(client, spec, organization)
        .await
}
