//! Many accounts and Regions for `read`, `tail` and `forward`: `--role-arn` (repeatable, assumed with
//! aws-config's `AssumeRoleProvider`), `--region` (repeatable) and log group ARNs. Each account
//! and Region is a [`Scope`] with a client, a FilterLogEvents budget and counters of its own (the
//! quota is per account and Region); the selected groups are found in every scope and read as
//! one run, each group's end marked under `account/region/group` when more than one scope is
//! read (the key of `forward`'s checkpoint).

use super::cloudwatch::AwsArgs;
use spanline::convert::aws::{Role, Scope};
use spanline::convert::source::cloudwatch::budget::Budget;
use spanline::convert::source::cloudwatch::filter::{
    resolve_groups, GroupRange, GroupSelection, Progress, Query, Reader,
};
use spanline::convert::source::cloudwatch::live::group_name_of;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Accounts and Regions to read.
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Accounts and Regions")]
pub struct ScopeArgs {
    /// Read the log groups of this role's account (repeatable): the role is assumed with STS
    /// AssumeRole over the base credentials, in each --region. With roles, only their accounts
    /// are read.
    #[arg(long = "role-arn", value_name = "ARN")]
    role_arn: Vec<String>,
    /// The external id the roles' trust policies ask for.
    #[arg(long = "external-id", value_name = "ID", requires = "role_arn")]
    external_id: Option<String>,
    /// The session name of the assumed roles (CloudTrail shows it).
    #[arg(
        long = "role-session-name",
        value_name = "NAME",
        default_value = "spanline",
        requires = "role_arn"
    )]
    role_session_name: String,
}

/// One account and Region: what it is and who reads it.
#[derive(Debug)]
pub struct Scoped {
    /// The account and Region.
    pub scope: Scope,
    /// Its client, budget and counters.
    pub reader: Reader,
    /// Its configuration (Live Tail builds a client of its own from it).
    pub sdk: aws_config::SdkConfig,
}

/// The scopes the flags name: every role (or the base credentials) in every Region (or the
/// configured one), each with `max_tps` requests per second.
pub async fn scopes(aws: &AwsArgs, args: &ScopeArgs, max_tps: f64) -> anyhow::Result<Vec<Scoped>> {
    let mut roles: Vec<Option<Role>> = Vec::new();
    for arn in &args.role_arn {
        let arn = arn.trim();
        let role = Role {
            arn: arn.to_owned(),
            external_id: args.external_id.clone(),
            session_name: args.role_session_name.clone(),
        };
        if !arn.starts_with("arn:") || !arn.contains(":role/") || role.account().is_none() {
            anyhow::bail!(
                "--role-arn {:?}: expected arn:aws:iam::<account>:role/<name>",
                spanline::convert::printable::Visible(arn)
            );
        }
        roles.push(Some(role));
    }
    if roles.is_empty() {
        roles.push(None);
    }
    let regions: Vec<Option<String>> = if aws.region.is_empty() {
        vec![None]
    } else {
        aws.region
            .iter()
            .map(|r| Some(r.trim().to_owned()))
            .collect()
    };
    let options = aws.options();
    let mut out: Vec<Scoped> = Vec::new();
    for role in &roles {
        for region in &regions {
            let scope = Scope {
                role: role.clone(),
                region: region.clone(),
            };
            let sdk = options.load_scope(&scope).await;
            let scope = Scope {
                // The Region the configuration settled on (the profile's, when not given).
                region: region
                    .clone()
                    .or_else(|| sdk.region().map(|r| r.to_string())),
                ..scope
            };
            // The quota is the account's in a Region: two roles into one account share it.
            let budget = out
                .iter()
                .find(|s| s.scope.label() == scope.label())
                .map_or_else(|| Budget::per_second(max_tps), |s| s.reader.budget.clone());
            out.push(Scoped {
                scope,
                reader: Reader {
                    client: aws_sdk_cloudwatchlogs::Client::new(&sdk),
                    budget,
                    progress: Arc::new(Progress::default()),
                },
                sdk,
            });
        }
    }
    Ok(out)
}

/// The Region of a log group ARN (`arn:aws:logs:<region>:<account>:log-group:<name>`).
fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// The groups of `sel` in each scope, as ranges over `query`: with one scope, as `read` always
/// read them (names as given, listed ones after); with several, a named group where
/// DescribeLogGroups finds it (an error when it is nowhere), listed ones per scope, a group ARN
/// in the first scope of its Region; each marked under `account/region/group`.
pub async fn ranges(
    scopes: &[Scoped],
    sel: &GroupSelection,
    query: &Query,
) -> anyhow::Result<Vec<GroupRange>> {
    if let [one] = scopes {
        let r = &one.reader;
        let groups = resolve_groups(&r.client, &r.budget, &r.progress, sel).await?;
        return Ok(groups
            .into_iter()
            .map(|g| GroupRange {
                reader: Some(r.clone()),
                ..GroupRange::new(g, query.clone())
            })
            .collect());
    }
    let (arns, names): (Vec<&String>, Vec<&String>) =
        sel.names.iter().partition(|n| n.starts_with("arn:"));
    let mut out: Vec<GroupRange> = Vec::new();
    let mut found = vec![false; names.len()];
    for s in scopes {
        let r = &s.reader;
        let mut groups: Vec<String> = Vec::new();
        if sel.prefix.is_some() || sel.pattern.is_some() {
            let listed = GroupSelection {
                names: Vec::new(),
                ..sel.clone()
            };
            groups.extend(resolve_groups(&r.client, &r.budget, &r.progress, &listed).await?);
        }
        for (i, name) in names.iter().enumerate() {
            // DescribeLogGroups with the name as the prefix: an exact match exists here.
            let exact = GroupSelection {
                names: Vec::new(),
                prefix: Some((*name).clone()),
                pattern: None,
            };
            let listed = resolve_groups(&r.client, &r.budget, &r.progress, &exact).await?;
            if listed.iter().any(|g| g == *name) {
                found[i] = true;
                if !groups.contains(name) {
                    groups.push((*name).clone());
                }
            }
        }
        let label = s.scope.label();
        out.extend(groups.into_iter().map(|g| GroupRange {
            reader: Some(r.clone()),
            key: Some(format!("{label}/{g}")),
            ..GroupRange::new(g, query.clone())
        }));
    }
    if let Some(i) = found.iter().position(|f| !f) {
        anyhow::bail!(
            "log group {:?} is in none of the {} accounts and Regions read",
            spanline::convert::printable::Visible(names[i]),
            scopes.len()
        );
    }
    for arn in arns {
        let Some(s) = scopes
            .iter()
            .find(|s| s.scope.region.as_deref() == arn_region(arn))
        else {
            anyhow::bail!(
                "log group {:?}: no --region {} is read",
                spanline::convert::printable::Visible(arn),
                arn_region(arn).unwrap_or("?")
            );
        };
        let account = arn.split(':').nth(4).unwrap_or("?");
        let region = arn_region(arn).unwrap_or("?");
        out.push(GroupRange {
            reader: Some(s.reader.clone()),
            key: Some(format!("{account}/{region}/{}", group_name_of(arn))),
            ..GroupRange::new(arn.clone(), query.clone())
        });
    }
    Ok(out)
}

/// The Region spans are tagged with (`cloud.region`): the one read, when there is one.
pub fn single_region(scopes: &[Scoped]) -> Option<String> {
    let mut regions = scopes.iter().map(|s| s.scope.region.clone());
    let first = regions.next().flatten();
    if regions.all(|r| r == first) {
        first
    } else {
        None
    }
}

/// The groups of `ranges` each scope reads, by scope.
pub fn groups_by_scope(scopes: &[Scoped], ranges: &[GroupRange]) -> Vec<Vec<String>> {
    scopes
        .iter()
        .map(|s| {
            ranges
                .iter()
                .filter(|r| {
                    r.reader
                        .as_ref()
                        .is_some_and(|x| Arc::ptr_eq(&x.progress, &s.reader.progress))
                })
                .map(|r| r.group.clone())
                .collect()
        })
        .collect()
}

/// How many of `ranges` each scope reads.
pub fn groups_per_scope(scopes: &[Scoped], ranges: &[GroupRange]) -> Vec<usize> {
    groups_by_scope(scopes, ranges)
        .iter()
        .map(Vec::len)
        .collect()
}

/// One line per scope for the summary, when several are read: its groups (`groups`, from
/// [`groups_per_scope`]) and the requests it made.
pub fn summary(scopes: &[Scoped], groups: &[usize]) -> Vec<String> {
    if scopes.len() < 2 {
        return Vec::new();
    }
    scopes
        .iter()
        .zip(groups)
        .map(|(s, groups)| {
            let p = &s.reader.progress;
            format!(
                "{}: {groups} log groups, {} requests ({} throttled)",
                s.scope.label(),
                p.requests.load(Ordering::Relaxed),
                p.throttled.load(Ordering::Relaxed)
            )
        })
        .collect()
}

/// The counters of every scope, added up.
pub fn total(scopes: &[Scoped]) -> (u64, u64, u64) {
    scopes.iter().fold((0, 0, 0), |(r, t, e), s| {
        let p = &s.reader.progress;
        (
            r + p.requests.load(Ordering::Relaxed),
            t + p.throttled.load(Ordering::Relaxed),
            e + p.empty_pages.load(Ordering::Relaxed),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_regions_and_labels() {
        assert_eq!(
            arn_region("arn:aws:logs:eu-west-1:222222222222:log-group:/aws/lambda/a"),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("arn:aws:logs::1:log-group:x"), None);
        let s = Scope {
            role: Some(Role {
                arn: "arn:aws:iam::222222222222:role/reader".into(),
                external_id: None,
                session_name: "spanline".into(),
            }),
            region: Some("eu-west-1".into()),
        };
        assert_eq!(s.label(), "222222222222/eu-west-1");
        assert_eq!(Scope::default().label(), "default/default");
    }

    /// FilterLogEvents' quota is the account's in a Region: two roles into one account share a
    /// budget there, other accounts and Regions have their own.
    #[tokio::test]
    async fn a_budget_per_account_and_region() {
        let aws = AwsArgs {
            region: vec!["us-east-1".into(), "eu-west-1".into()],
            ..AwsArgs::default()
        };
        let args = ScopeArgs {
            role_arn: vec![
                "arn:aws:iam::111111111111:role/a".into(),
                "arn:aws:iam::111111111111:role/b".into(),
                "arn:aws:iam::222222222222:role/a".into(),
            ],
            external_id: None,
            role_session_name: "spanline".into(),
        };
        let s = scopes(&aws, &args, 5.0).await.expect("scopes");
        let labels: Vec<String> = s.iter().map(|x| x.scope.label()).collect();
        assert_eq!(
            labels,
            [
                "111111111111/us-east-1",
                "111111111111/eu-west-1",
                "111111111111/us-east-1",
                "111111111111/eu-west-1",
                "222222222222/us-east-1",
                "222222222222/eu-west-1",
            ]
        );
        let shared = |i: usize, j: usize| s[i].reader.budget.shares(&s[j].reader.budget);
        assert!(shared(0, 2) && shared(1, 3), "two roles, one account");
        assert!(
            !shared(0, 1) && !shared(0, 4) && !shared(1, 5),
            "Regions and accounts apart"
        );
        assert!(
            scopes(
                &aws,
                &ScopeArgs {
                    role_arn: vec!["reader".into()],
                    ..args.clone()
                },
                5.0
            )
            .await
            .is_err(),
            "a role that is not an ARN"
        );
    }
}
