//! The registry: every tool the server has, with its name, title, MCP hints and what it may do.
//! A leaf module — the policy and the front doors read it without reaching the tools' code.

/// Every tool, in the order `tools/list` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolKind {
    WorkspaceList,
    Version,
    Init,
    Validate,
    Fmt,
    Plan,
    Show,
    Output,
    Graph,
    Providers,
    Apply,
    GitHubPrepare,
}

/// MCP tool annotations. They must tell the truth: clients decide on confirmation prompts
/// from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl ToolKind {
    pub const ALL: &'static [ToolKind] = &[
        ToolKind::WorkspaceList,
        ToolKind::Version,
        ToolKind::Init,
        ToolKind::Validate,
        ToolKind::Fmt,
        ToolKind::Plan,
        ToolKind::Show,
        ToolKind::Output,
        ToolKind::Graph,
        ToolKind::Providers,
        ToolKind::Apply,
        ToolKind::GitHubPrepare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ToolKind::WorkspaceList => "workspace_list",
            ToolKind::Version => "terraform_version",
            ToolKind::Init => "terraform_init",
            ToolKind::Validate => "terraform_validate",
            ToolKind::Fmt => "terraform_fmt",
            ToolKind::Plan => "terraform_plan",
            ToolKind::Show => "terraform_show",
            ToolKind::Output => "terraform_output",
            ToolKind::Graph => "terraform_graph",
            ToolKind::Providers => "terraform_providers",
            ToolKind::Apply => "terraform_apply",
            ToolKind::GitHubPrepare => "github_prepare_workspace",
        }
    }

    pub fn from_name(name: &str) -> Option<ToolKind> {
        ToolKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    pub fn title(self) -> &'static str {
        match self {
            ToolKind::WorkspaceList => "List workspaces",
            ToolKind::Version => "Terraform version",
            ToolKind::Init => "terraform init",
            ToolKind::Validate => "terraform validate",
            ToolKind::Fmt => "terraform fmt",
            ToolKind::Plan => "terraform plan",
            ToolKind::Show => "terraform show",
            ToolKind::Output => "terraform output",
            ToolKind::Graph => "terraform graph",
            ToolKind::Providers => "terraform providers",
            ToolKind::Apply => "terraform apply (saved plan)",
            ToolKind::GitHubPrepare => "Prepare a workspace from GitHub",
        }
    }

    /// Whether the tool takes a `path` and runs inside a workspace (and so holds its lock).
    pub fn needs_workspace(self) -> bool {
        !matches!(
            self,
            ToolKind::WorkspaceList | ToolKind::Version | ToolKind::GitHubPrepare
        )
    }

    pub fn hints(self) -> Hints {
        let read = Hints {
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
        };
        match self {
            ToolKind::WorkspaceList
            | ToolKind::Version
            | ToolKind::Validate
            | ToolKind::Show
            | ToolKind::Output
            | ToolKind::Graph
            | ToolKind::Providers => read,
            // Downloads modules and providers (from the cache or registries) into .terraform.
            ToolKind::Init => Hints {
                read_only: false,
                destructive: false,
                idempotent: true,
                open_world: true,
            },
            // Rewrites files only with write: true; formatting twice changes nothing more.
            ToolKind::Fmt => Hints {
                read_only: false,
                destructive: false,
                idempotent: true,
                open_world: false,
            },
            // Reads real infrastructure (refresh, data sources) and saves a plan file in the
            // server's state dir; changes nothing in the infrastructure or the workspace.
            ToolKind::Plan => Hints {
                read_only: true,
                destructive: false,
                idempotent: false,
                open_world: true,
            },
            ToolKind::Apply => Hints {
                read_only: false,
                destructive: true,
                idempotent: false,
                open_world: true,
            },
            // Creates a new directory under the root from a repository on GitHub; touches
            // nothing that exists.
            ToolKind::GitHubPrepare => Hints {
                read_only: false,
                destructive: false,
                idempotent: false,
                open_world: true,
            },
        }
    }

    /// Whether the tool changes real infrastructure. Such a call runs only when its audit
    /// event can be written (the fail-closed gate): decided here, exhaustively, not from an
    /// MCP hint.
    pub fn mutates_infrastructure(self) -> bool {
        match self {
            ToolKind::Apply => true,
            ToolKind::WorkspaceList
            | ToolKind::Version
            | ToolKind::Init
            | ToolKind::Validate
            | ToolKind::Fmt
            | ToolKind::Plan
            | ToolKind::Show
            | ToolKind::Output
            | ToolKind::Graph
            | ToolKind::Providers
            | ToolKind::GitHubPrepare => false,
        }
    }
}
