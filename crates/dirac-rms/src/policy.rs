//! Who may call what in request management. Any user may put requests
//! (they are theirs) and see, cancel or delete their own; request
//! administrators may act on everyone's.

use dirac_core::auth::{Access, PolicyTable};

pub const REQ_MANAGER: &str = "dirac.rms.v1.ReqManager";

/// Users, and jobs through their job tokens (failover requests).
const USERS: &[&str] = &[
    "NormalUser",
    "FileCatalogManagement",
    "ProductionManagement",
];
/// May see and act on every owner's requests.
pub const ADMINS: &[&str] = &["Operator", "FileCatalogManagement", "ProductionManagement"];

/// Every request-management method with its access policy.
pub fn register(table: &mut PolicyTable) {
    let user = Access::AnyOf(USERS);
    table.add_service(
        REQ_MANAGER,
        &[
            ("PutRequests", user),
            ("GetRequests", user),
            ("ListRequests", user),
            ("CancelRequests", user),
            ("DeleteRequests", user),
        ],
    );
}
