//! Real PAM authentication through libpam (`pam` realm). Blocking: call it
//! from a blocking thread.

use crate::AccessError;
use std::ffi::{c_char, c_int, c_void, CString};

/// The PAM service upstream uses (`/etc/pam.d/proxmox-ve-auth`, which the
/// install script creates as `common-auth` + `common-account`).
pub const PAM_SERVICE: &str = "proxmox-ve-auth";

const PAM_SUCCESS: c_int = 0;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_SILENT: c_int = 0x8000;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

#[repr(C)]
struct PamConv {
    conv: extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
}

extern "C" {
    fn calloc(n: usize, size: usize) -> *mut c_void;
    fn strdup(s: *const c_char) -> *mut c_char;
}

/// Answers every password prompt with the password in `appdata`.
extern "C" fn conversation(
    num: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if num <= 0 || msgs.is_null() || resp.is_null() || appdata.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: PAM owns the array we allocate here and frees it (and every
    // `resp` string) with free(); calloc/strdup match that allocator.
    unsafe {
        let replies = calloc(num as usize, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if replies.is_null() {
            return PAM_BUF_ERR;
        }
        let password = appdata as *const c_char;
        for i in 0..num as usize {
            // Linux-PAM passes an array of pointers to messages.
            let msg = *msgs.add(i);
            if msg.is_null() {
                continue;
            }
            let style = (*msg).msg_style;
            if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
                (*replies.add(i)).resp = strdup(password);
            }
        }
        *resp = replies;
    }
    PAM_SUCCESS
}

/// Authenticates `username` (without realm) with `password` through PAM
/// `service`, and checks that the account is valid.
pub fn authenticate(service: &str, username: &str, password: &str) -> Result<(), AccessError> {
    let fail = |_| AccessError::AuthFailed;
    let service = CString::new(service).map_err(fail)?;
    let user = CString::new(username).map_err(fail)?;
    let pass = CString::new(password).map_err(fail)?;
    let conv = PamConv {
        conv: conversation,
        appdata_ptr: pass.as_ptr() as *mut c_void,
    };
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: all pointers are valid NUL-terminated strings or structs that
    // outlive the PAM transaction, which pam_end closes on every path.
    unsafe {
        let rc = pam_start(service.as_ptr(), user.as_ptr(), &conv, &mut handle);
        if rc != PAM_SUCCESS || handle.is_null() {
            return Err(AccessError::AuthFailed);
        }
        let mut rc = pam_authenticate(handle, PAM_SILENT);
        if rc == PAM_SUCCESS {
            rc = pam_acct_mgmt(handle, PAM_SILENT);
        }
        pam_end(handle, rc);
        if rc == PAM_SUCCESS {
            Ok(())
        } else {
            Err(AccessError::AuthFailed)
        }
    }
}

/// The service to use: upstream's when its PAM file exists, else `login`.
pub fn service() -> &'static str {
    if std::path::Path::new("/etc/pam.d")
        .join(PAM_SERVICE)
        .exists()
    {
        PAM_SERVICE
    } else {
        "login"
    }
}
