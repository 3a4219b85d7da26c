//! ISO 9660 images: the files of the primary volume's directory tree.

use crate::archive::{Budget, Members, Stop};

/// Whether `data` is an ISO 9660 image: `CD001` in the first volume
/// descriptor.
pub fn starts(data: &[u8]) -> bool {
    data.get(0x8001..0x8006) == Some(b"CD001")
}

/// ISO images are unsupported for now.
pub fn members(_data: &[u8], _budget: &mut Budget, _out: &mut Members) -> Result<(), Stop> {
    Err(Stop::Unsupported("an ISO 9660 image".into()))
}
