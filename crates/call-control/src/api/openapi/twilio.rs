//! Schemas of Twilio's hang-up endpoint (`api::twilio`): its form body and Twilio's error
//! format, which that endpoint answers in instead of the API's envelope.

use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

/// The form body of `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`
/// (`application/x-www-form-urlencoded`); other call updates (`Url`, `Twiml`, ...) are not
/// supported.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TwilioCallUpdate {
    /// `completed`: hang up, answered or not; `canceled`: cancel a call not answered yet.
    #[serde(rename = "Status")]
    pub status: TwilioStatusUpdate,
}

/// The `Status` a hang-up asks for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TwilioStatusUpdate {
    /// End the call, answered or not.
    Completed,
    /// Cancel the call if it is not answered yet (an answered call is left as it is).
    Canceled,
}

/// Twilio's error body: `{"code", "message", "more_info", "status"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TwilioErrorBody {
    /// Twilio's error code: 20001, 20003, 20404, 20409, 20429, 20500.
    pub code: u32,
    /// What went wrong, for people.
    pub message: String,
    /// `https://www.twilio.com/docs/errors/<code>`.
    pub more_info: String,
    /// The HTTP status.
    pub status: u16,
}

/// Errors of Twilio's hang-up, in Twilio's format.
#[derive(Debug, IntoResponses)]
pub enum TwilioErrors {
    /// 20001: `Status` missing or not `completed`/`canceled`, or the body is not a form.
    #[response(status = 400)]
    InvalidParameter(TwilioErrorBody),
    /// 20003: missing or wrong credentials, or an `AccountSid` that is not the key's
    /// organisation.
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Basic realm=\"Twilio API\"`"))
    )]
    Authenticate(TwilioErrorBody),
    /// 20404: an unknown call, a path without `.json`, or a call that has already ended.
    #[response(status = 404)]
    NotFound(TwilioErrorBody),
    /// 20409: the call is not live on this node.
    #[response(status = 409)]
    Conflict(TwilioErrorBody),
    /// 20429: past the key's rate limit.
    #[response(status = 429)]
    TooManyRequests(TwilioErrorBody),
}
