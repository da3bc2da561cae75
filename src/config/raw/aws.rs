//! `[registry]` and `[cloudformation]` as written, validated: where images are pulled from and
//! where releases are read from.

use super::*;

pub(super) fn registry_settings(ctx: &Ctx, g: Registry) -> Result<RegistrySettings, ConfigError> {
    let defaults = RegistrySettings::default();
    if let Some((i, h)) = g
        .ecr_registries
        .iter()
        .enumerate()
        .find(|(_, h)| h.is_empty() || h.contains(['/', ' ']))
    {
        return Err(ctx.invalid(
            format!("registry.ecr_registries[{i}]"),
            format!("{h:?}: expected a registry host such as 123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
        ));
    }
    if let Some(f) = &g.auth_file {
        absolute(ctx, "registry.auth_file", f)?;
    }
    Ok(RegistrySettings {
        auth_file: g.auth_file,
        ecr_registries: g.ecr_registries,
        ecr_region: g.ecr_region,
        pull_timeout: match g.pull_timeout_secs {
            None => defaults.pull_timeout,
            Some(s) => std::time::Duration::from_secs(positive(
                ctx,
                "registry.pull_timeout_secs".into(),
                s,
            )?),
        },
        min_free_disk_mb: g.min_free_disk_mb.unwrap_or(defaults.min_free_disk_mb),
    })
}

/// `report_region` is the region the stack is read in when `[cloudformation]` names none.
pub(super) fn cloudformation_settings(
    ctx: &Ctx,
    c: CloudFormation,
    report_region: Option<String>,
) -> Result<MetadataWatchSettings, ConfigError> {
    for (key, value) in [("stack", &c.stack), ("resource", &c.resource)] {
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(ctx.invalid(
                format!("cloudformation.{key}"),
                format!("{value:?}: expected a stack name or a logical resource id"),
            ));
        }
    }
    let poll = c.poll_secs.unwrap_or(15);
    if !(1..=3600).contains(&poll) {
        return Err(ctx.invalid(
            "cloudformation.poll_secs",
            format!("{poll}: expected 1 to 3600 seconds"),
        ));
    }
    Ok(MetadataWatchSettings {
        stack: c.stack,
        resource: c.resource,
        key: c.key.unwrap_or_else(|| "hotswap".into()),
        region: c.region.or(report_region),
        poll: std::time::Duration::from_secs(poll),
    })
}
