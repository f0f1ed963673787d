use super::*;
use crate::config::Config;

fn policy_of(toml_text: &str) -> anyhow::Result<AccessPolicy> {
    let config: Config = toml::from_str(toml_text)?;
    AccessPolicy::from_config(&config)
}

fn error_of(toml_text: &str) -> String {
    format!("{:#}", policy_of(toml_text).unwrap_err())
}

#[test]
fn roles_are_ordered_and_named() {
    assert!(Role::NoAccess < Role::Viewer);
    assert!(Role::Viewer < Role::Developer);
    assert!(Role::Developer < Role::Deployer);
    assert!(Role::Deployer < Role::Admin);
    for role in Role::ALL {
        assert_eq!(Role::parse(role.as_str()), Some(role));
    }
    assert_eq!(Role::parse(" Deployer "), Some(Role::Deployer));
    assert_eq!(Role::parse("root"), None);
}

#[test]
fn default_required_roles() {
    let policy = AccessPolicy::default();
    let role = |name: &str| policy.required_role(CommandKind::from_name(name).unwrap());
    assert_eq!(role("help"), Role::NoAccess);
    assert_eq!(role("whoami"), Role::NoAccess);
    for viewer in ["env list", "env status"] {
        assert_eq!(role(viewer), Role::Viewer, "{viewer}");
    }
    for developer in [
        "env logs",
        "env up",
        "env down",
        "env extend",
        "test",
        "approve",
    ] {
        assert_eq!(role(developer), Role::Developer, "{developer}");
    }
}

#[test]
fn env_logs_needs_a_developer_unless_the_config_says_otherwise() {
    let policy = AccessPolicy::default();
    let read = policy.role_for_github("read");
    let refusal = policy.check(read, CommandKind::EnvLogs).unwrap_err();
    assert!(
        refusal
            .to_string()
            .contains("`env logs` needs the developer role"),
        "{refusal}"
    );
    assert!(policy
        .check(policy.role_for_github("write"), CommandKind::EnvLogs)
        .is_ok());
    let opened = policy_of("[permissions.commands]\n\"env logs\" = \"viewer\"\n").unwrap();
    assert!(opened.check(read, CommandKind::EnvLogs).is_ok());
}

#[test]
fn audit_outcomes_lose_url_credentials_and_tokens() {
    let text = redact(
        "error: git fetch failed: unable to access 'https://oauth2:abc123secret@h/x.git/' \
         with ghp_abcdefghijklmnopqrstuvwxyz0123456789AB",
    );
    assert!(
        !text.contains("abc123secret") && !text.contains("oauth2"),
        "{text}"
    );
    assert!(!text.contains("ghp_abcdef"), "{text}");
    assert!(text.contains("https://h/x.git/"), "{text}");
}

#[test]
fn github_levels_map_to_roles() {
    let policy = AccessPolicy::default();
    assert_eq!(policy.role_for_github("admin"), Role::Admin);
    assert_eq!(policy.role_for_github("maintain"), Role::Deployer);
    assert_eq!(policy.role_for_github("write"), Role::Developer);
    assert_eq!(policy.role_for_github("push"), Role::Developer);
    assert_eq!(policy.role_for_github("triage"), Role::Viewer);
    assert_eq!(policy.role_for_github("read"), Role::Viewer);
    assert_eq!(policy.role_for_github("pull"), Role::Viewer);
    assert_eq!(policy.role_for_github("none"), Role::NoAccess);
    assert_eq!(policy.role_for_github("something-new"), Role::NoAccess);
    assert_eq!(policy.github_level_for(Role::Developer), Some("write"));
    assert_eq!(policy.github_level_for(Role::Viewer), Some("read"));
    assert_eq!(policy.github_level_for(Role::NoAccess), Some("none"));
}

#[test]
fn no_access_may_run_only_help_and_whoami() {
    let policy = AccessPolicy::default();
    let none = policy.role_for_github("none");
    assert_eq!(
        policy.allowed_commands(none),
        vec![CommandKind::Help, CommandKind::WhoAmI]
    );
    assert_eq!(
        policy.allowed_commands(Role::Viewer),
        vec![
            CommandKind::EnvList,
            CommandKind::EnvStatus,
            CommandKind::QueueList,
            CommandKind::QueueStatus,
            CommandKind::RolloutStatus,
            CommandKind::Help,
            CommandKind::WhoAmI
        ]
    );
    // Closing the tree, pinning and what ships are for deployers.
    let developer = policy.allowed_commands(Role::Developer);
    assert_eq!(developer.len(), CommandKind::ALL.len() - 12);
    assert!(!developer.contains(&CommandKind::QueuePause));
    // So is pinning an env (it costs for as long as it stands); sleep and wake are not.
    assert!(!developer.contains(&CommandKind::EnvPin));
    assert!(developer.contains(&CommandKind::EnvWake));
    assert_eq!(
        policy.allowed_commands(Role::Deployer).len(),
        CommandKind::ALL.len()
    );
}

#[test]
fn check_refuses_with_one_helpful_line() {
    let policy = AccessPolicy::default();
    assert!(policy.check(Role::Developer, CommandKind::EnvUp).is_ok());
    assert!(policy.check(Role::Admin, CommandKind::EnvUp).is_ok());
    let refusal = policy.check(Role::Viewer, CommandKind::EnvUp).unwrap_err();
    assert_eq!(
        refusal,
        Refusal {
            command: CommandKind::EnvUp,
            needed: Role::Developer,
            have: Role::Viewer
        }
    );
    assert_eq!(
        refusal.to_string(),
        "`env up` needs the developer role; you have viewer."
    );
    let refusal = policy
        .check(Role::NoAccess, CommandKind::EnvStatus)
        .unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "`env status` needs the viewer role; you have no role."
    );
    assert_eq!(
        Outcome::refused(&refusal).to_string(),
        "refused: `env status` needs the viewer role; you have no role."
    );
    assert_eq!(Outcome::Ok.to_string(), "ok");
    assert_eq!(
        Outcome::error("no such env\n  try env list").to_string(),
        "error: no such env try env list"
    );
}

#[test]
fn discord_role_is_the_highest_listed_else_the_default() {
    let policy = policy_of(
        r#"
[permissions.discord_users]
"100" = "admin"
"101" = "none"
[permissions.discord_roles]
"900" = "developer"
"901" = "deployer"
"#,
    )
    .unwrap();
    assert_eq!(policy.role_for_discord(1, &[]), Role::Viewer);
    assert_eq!(policy.role_for_discord(1, &[5, 6]), Role::Viewer);
    assert_eq!(policy.role_for_discord(1, &[900]), Role::Developer);
    assert_eq!(policy.role_for_discord(1, &[900, 901]), Role::Deployer);
    assert_eq!(policy.role_for_discord(100, &[900]), Role::Admin);
    // A listed user is not raised to the default: "none" shuts them out...
    assert_eq!(policy.role_for_discord(101, &[]), Role::NoAccess);
    // ... unless one of their Discord roles gives more.
    assert_eq!(policy.role_for_discord(101, &[900]), Role::Developer);

    let strict = policy_of("[permissions]\ndefault_role = \"none\"\n").unwrap();
    assert_eq!(strict.role_for_discord(1, &[2]), Role::NoAccess);
}

#[test]
fn config_overrides_every_default() {
    let policy = policy_of(
        r#"
[permissions]
default_role = "developer"
api_token_role = "deployer"
[permissions.github]
write = "viewer"
maintain = "admin"
[permissions.commands]
"env down" = "deployer"
"ENV   Up" = "admin"
"#,
    )
    .unwrap();
    assert_eq!(policy.role_for_discord(1, &[]), Role::Developer);
    assert_eq!(policy.role_for_api_token(), Role::Deployer);
    assert_eq!(policy.role_for_github("write"), Role::Viewer);
    assert_eq!(policy.role_for_github("maintain"), Role::Admin);
    assert_eq!(policy.role_for_github("admin"), Role::Admin);
    assert_eq!(policy.required_role(CommandKind::EnvDown), Role::Deployer);
    assert_eq!(policy.required_role(CommandKind::EnvUp), Role::Admin);
    assert_eq!(policy.required_role(CommandKind::Test), Role::Developer);
    assert_eq!(policy.github_level_for(Role::Developer), Some("maintain"));
    assert_eq!(
        policy
            .check(Role::Developer, CommandKind::EnvDown)
            .unwrap_err()
            .to_string(),
        "`env down` needs the deployer role; you have developer."
    );
}

#[test]
fn no_permissions_table_means_the_defaults() {
    assert_eq!(policy_of("").unwrap(), AccessPolicy::default());
    assert_eq!(
        AccessPolicy::from_config(&Config::embedded_defaults()).unwrap(),
        AccessPolicy::default()
    );
    let policy = AccessPolicy::default();
    assert_eq!(policy.role_for_api_token(), Role::Admin);
    assert_eq!(policy.role_for_discord(42, &[7]), Role::Viewer);
}

#[test]
fn config_mistakes_are_clear_errors() {
    let err = error_of("[permissions.commands]\n\"env upp\" = \"developer\"\n");
    assert!(err.contains("\"env upp\" is not a command"), "{err}");
    assert!(err.contains("\"env up\""), "{err}");

    let err = error_of("[permissions.commands]\n\"env down\" = \"deployr\"\n");
    assert!(err.contains("[permissions.commands] \"env down\""), "{err}");
    assert!(err.contains("\"deployr\" is not a role"), "{err}");
    assert!(err.contains("viewer, developer, deployer, admin"), "{err}");

    let err = error_of("[permissions]\ndefault_role = \"guest\"\n");
    assert!(err.contains("default_role"), "{err}");
    assert!(err.contains("\"guest\" is not a role"), "{err}");

    let err = error_of("[permissions]\napi_token_role = \"root\"\n");
    assert!(err.contains("api_token_role"), "{err}");

    let err = error_of("[permissions.discord_users]\n\"alice\" = \"admin\"\n");
    assert!(
        err.contains("[permissions.discord_users] \"alice\""),
        "{err}"
    );
    assert!(err.contains("a Discord id is a number"), "{err}");

    let err = error_of("[permissions.discord_roles]\n\"12\" = \"boss\"\n");
    assert!(err.contains("[permissions.discord_roles] \"12\""), "{err}");

    let err = error_of("[permissions.github]\nowner = \"admin\"\n");
    assert!(
        err.contains("\"owner\" is not a GitHub permission level"),
        "{err}"
    );

    // Unknown keys of the table itself are parse errors.
    let err = toml::from_str::<Config>("[permissions]\ndefault = \"viewer\"\n").unwrap_err();
    assert!(err.to_string().contains("default"), "{err}");
}

#[test]
fn callers_name_their_surface() {
    let caller = Caller::github("alice");
    assert_eq!(caller.surface, Surface::GitHub);
    assert_eq!(caller.id, "github:alice");
    assert_eq!(caller.display, "alice");
    let caller = Caller::discord(1234, "Ann");
    assert_eq!(
        (caller.id.as_str(), caller.display.as_str()),
        ("discord:1234", "Ann")
    );
    assert_eq!(caller.surface.as_str(), "discord");
    let caller = Caller::api(Surface::Cli, "api:bob");
    assert_eq!(
        (caller.id.as_str(), caller.display.as_str()),
        ("api:bob", "bob")
    );
    assert_eq!(caller.surface.to_string(), "cli");
}

#[test]
fn the_example_config_shows_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../slipway.example.toml");
    let policy = AccessPolicy::from_config(&Config::load(&path).unwrap()).unwrap();
    let defaults = AccessPolicy::default();
    for kind in CommandKind::ALL {
        assert_eq!(
            policy.required_role(kind),
            defaults.required_role(kind),
            "{}",
            kind.name()
        );
    }
    for level in GITHUB_LEVELS {
        assert_eq!(
            policy.role_for_github(level),
            defaults.role_for_github(level)
        );
    }
    assert_eq!(policy.role_for_api_token(), Role::Admin);
    assert_eq!(policy.role_for_discord(1, &[]), Role::Viewer);
    assert_eq!(
        policy.role_for_discord(444444444444444444, &[]),
        Role::Admin
    );
    assert_eq!(
        policy.role_for_discord(1, &[555555555555555555]),
        Role::Developer
    );
}
