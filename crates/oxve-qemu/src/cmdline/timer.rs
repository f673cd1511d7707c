//! Clock handling (upstream's `Cfg2Cmd::Timer`): the PIT tick policy and
//! HPET for Windows and Linux guests, and the `-rtc` base and drift fix.

use super::props::perl_true;
use super::{default_of, machine, Ctx};
use crate::error::CmdlineError;

/// `-global` values, `-machine` flags and `-rtc` flags for the clocks.
#[allow(clippy::type_complexity)]
pub fn flags(
    ctx: &Ctx,
    machine: &str,
) -> Result<(Vec<String>, Vec<String>, Vec<String>), CmdlineError> {
    let mut globals = Vec::new();
    let mut mflags = Vec::new();
    let mut rtc = Vec::new();
    let mut tdf = ctx.get("tdf").map(|v| perl_true(Some(v)));
    let acpi = perl_true(Some(ctx.get("acpi").unwrap_or("1")));
    let mut localtime = ctx.get("localtime").map(|v| perl_true(Some(v)));
    let startdate = ctx
        .get("startdate")
        .or(default_of("startdate"))
        .unwrap_or("now");
    let ostype = ctx
        .get("ostype")
        .or(default_of("ostype"))
        .unwrap_or("other");
    let hpet_ok = machine::base_type(machine)? != "virt";
    if ctx.winversion >= 5 {
        localtime.get_or_insert(true);
        if acpi && tdf.is_none() {
            tdf = Some(true);
        }
    }
    if ctx.winversion >= 6 {
        globals.push("kvm-pit.lost_tick_policy=discard".to_string());
        if hpet_ok {
            mflags.push("hpet=off".to_string());
        }
    } else if ostype == "l26" && ctx.version_guard(10, 1, 0) && hpet_ok {
        mflags.push("hpet=off".to_string());
    }
    if tdf == Some(true) {
        rtc.push("driftfix=slew".to_string());
    }
    if startdate != "now" {
        rtc.push(format!("base={startdate}"));
    } else if localtime == Some(true) {
        rtc.push("base=localtime".to_string());
    }
    Ok((globals, mflags, rtc))
}
