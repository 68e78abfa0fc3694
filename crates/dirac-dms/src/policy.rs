//! Who may call what in data management. The route table asks for a
//! property; the catalog then checks every path against its owner, group
//! and mode, and the caller's VO (see [`crate::perms`]).

use dirac_core::auth::{Access, PolicyTable};

pub const FILE_CATALOG: &str = "dirac.dms.v1.FileCatalog";
pub const STORAGE_ELEMENT: &str = "dirac.dms.v1.StorageElement";

const USERS: &[&str] = &["NormalUser", "FileCatalogManagement"];
/// Metadata fields are shared by the whole VO: declared by its data
/// managers.
const FIELD_MANAGERS: &[&str] = &["FileCatalogManagement", "ProductionManagement"];
const ADMINS: &[&str] = &["FileCatalogManagement"];

/// Every data-management method with its access policy.
pub fn register(table: &mut PolicyTable) {
    let user = Access::AnyOf(USERS);
    table.add_service(
        FILE_CATALOG,
        &[
            ("CreateDirectories", user),
            ("RemoveDirectories", user),
            ("AddFiles", user),
            ("RemoveFiles", user),
            ("AddReplicas", user),
            ("RemoveReplicas", user),
            ("Exists", user),
            ("GetFiles", user),
            ("GetDirectories", user),
            ("ListDirectory", user),
            ("GetDirectorySize", user),
            ("RepairDirectoryUsage", Access::AnyOf(ADMINS)),
            ("ChangeMode", user),
            ("ChangeOwner", user),
            ("AddMetadataField", Access::AnyOf(FIELD_MANAGERS)),
            ("RemoveMetadataField", Access::AnyOf(FIELD_MANAGERS)),
            ("GetMetadataFields", user),
            ("SetMetadata", user),
            ("RemoveMetadata", user),
            ("GetMetadata", user),
            ("FindFiles", user),
            ("AddDataset", user),
            ("FreezeDataset", user),
            ("ReleaseDataset", user),
            ("RemoveDataset", user),
            ("GetDatasets", user),
            ("GetDatasetFiles", user),
            ("AddAncestors", user),
            ("GetLineage", user),
        ],
    );
    table.add_service(
        STORAGE_ELEMENT,
        &[
            ("Put", user),
            ("Get", user),
            ("Remove", user),
            ("Stat", user),
            ("GetOccupancy", user),
            ("Replicate", user),
            ("ListStorageElements", user),
            ("GetAccessUrls", user),
        ],
    );
}
