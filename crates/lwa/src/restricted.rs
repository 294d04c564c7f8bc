//! Restricted operations (AMAZON.md §3.5): the one table of SP-API operations that need a
//! Restricted Data Token, and the canonical form of an RDT request, so that equal requests
//! share one token.
//!
//! Amazon lets most restricted operations be covered by a *generic* path
//! (`/orders/v0/orders/{orderId}/address` covers every order), which is what the broker asks for:
//! one RDT then serves every order of the seller for an hour. `getReportDocument` is the
//! exception: Amazon only accepts the specific path there.
//!
//! ```
//! use lwa::restricted::{self, RestrictedResource};
//! let asked = RestrictedResource {
//!     method: "get".into(),
//!     path: "/orders/v0/orders/123-1234567-1234567/address".into(),
//!     data_elements: vec![],
//! };
//! let canonical = restricted::canonical(&asked);
//! assert_eq!(canonical.method, "GET");
//! assert_eq!(canonical.path, "/orders/v0/orders/{orderId}/address");
//! assert_eq!(restricted::find("GET", &asked.path).unwrap().operation, "getOrderAddress");
//! ```

use serde::{Deserialize, Serialize};

use crate::manager::{TokenError, sp_api_error_message};
use crate::secret::AccessToken;

/// The Tokens API path of `createRestrictedDataToken`.
pub const RDT_PATH: &str = "/tokens/2021-03-01/restrictedDataToken";

/// A Restricted Data Token (`Atz.sprdt|…`), used in `x-amz-access-token` on restricted calls.
#[derive(Debug, Clone)]
pub struct RestrictedDataToken {
    /// The token.
    pub token: AccessToken,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Calls `createRestrictedDataToken` at `url` (the Tokens API on the seller's regional host)
/// with the seller's access token. Reads the answer at the top level (current model) or inside
/// `payload` (the 2021 guide).
pub async fn create_restricted_data_token(
    http: &reqwest::Client,
    url: &str,
    access_token: &AccessToken,
    user_agent: &str,
    resources: &[RestrictedResource],
    target_application: Option<&str>,
) -> Result<RestrictedDataToken, TokenError> {
    const OPERATION: &str = "createRestrictedDataToken";
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Request<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        target_application: Option<&'a str>,
        restricted_resources: &'a [RestrictedResource],
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Minted {
        restricted_data_token: String,
        expires_in: u64,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        payload: Minted,
    }
    let transport = |e: reqwest::Error| TokenError::Transport {
        operation: OPERATION,
        reason: e.without_url().to_string(),
    };
    let mut token_header =
        reqwest::header::HeaderValue::from_str(access_token.expose()).map_err(|_| TokenError::Transport {
            operation: OPERATION,
            reason: "the access token is not a valid header value".into(),
        })?;
    token_header.set_sensitive(true);
    let response = http
        .post(url)
        .header("x-amz-access-token", token_header)
        .header(reqwest::header::USER_AGENT, user_agent)
        .json(&Request {
            target_application,
            restricted_resources: resources,
        })
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(transport)?;
    if !(200..300).contains(&status) {
        return Err(TokenError::Api {
            operation: OPERATION,
            status,
            message: sp_api_error_message(&body),
        });
    }
    let minted = serde_json::from_slice::<Minted>(&body)
        .or_else(|_| serde_json::from_slice::<Wrapped>(&body).map(|w| w.payload))
        .map_err(|_| TokenError::Api {
            operation: OPERATION,
            status,
            message: "the response is not a restrictedDataToken".into(),
        })?;
    Ok(RestrictedDataToken {
        token: AccessToken::new(minted.restricted_data_token),
        expires_in: minted.expires_in,
    })
}

/// One resource of a Restricted Data Token request (Tokens API 2021-03-01).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestrictedResource {
    /// `GET`, `PUT`, `POST` or `DELETE`.
    pub method: String,
    /// A specific path (`/orders/v0/orders/123-1234567-1234567`) or a generic one
    /// (`/orders/v0/orders/{orderId}/address`).
    pub path: String,
    /// `buyerInfo`, `shippingAddress`, `buyerTaxInformation` (Orders operations only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_elements: Vec<String>,
}

/// An SP-API operation that needs a Restricted Data Token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestrictedOperation {
    /// Amazon's operation id (`getOrderAddress`).
    pub operation: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// The path template, placeholders in braces.
    pub path: &'static str,
    /// Whether Amazon accepts the generic path (the template) in an RDT request.
    pub generic: bool,
    /// Whether `dataElements` apply (Orders getOrders, getOrder, getOrderItems).
    pub data_elements: bool,
}

const fn op(
    operation: &'static str,
    method: &'static str,
    path: &'static str,
    generic: bool,
    data_elements: bool,
) -> RestrictedOperation {
    RestrictedOperation {
        operation,
        method,
        path,
        generic,
        data_elements,
    }
}

/// The restricted operations AMAZON.md §3.5 lists (Amazon's own list was truncated where it
/// was read; an operation missing here is still passed to Amazon as asked).
pub const RESTRICTED_OPERATIONS: &[RestrictedOperation] = &[
    // Orders v0
    op("getOrders", "GET", "/orders/v0/orders", true, true),
    op("getOrder", "GET", "/orders/v0/orders/{orderId}", true, true),
    op(
        "getOrderBuyerInfo",
        "GET",
        "/orders/v0/orders/{orderId}/buyerInfo",
        true,
        false,
    ),
    op(
        "getOrderAddress",
        "GET",
        "/orders/v0/orders/{orderId}/address",
        true,
        false,
    ),
    op(
        "getOrderItems",
        "GET",
        "/orders/v0/orders/{orderId}/orderItems",
        true,
        true,
    ),
    op(
        "getOrderItemsBuyerInfo",
        "GET",
        "/orders/v0/orders/{orderId}/orderItems/buyerInfo",
        true,
        false,
    ),
    op(
        "getOrderRegulatedInfo",
        "GET",
        "/orders/v0/orders/{orderId}/regulatedInfo",
        true,
        false,
    ),
    // Merchant Fulfillment v0
    op(
        "getShipment",
        "GET",
        "/mfn/v0/shipments/{shipmentId}",
        true,
        false,
    ),
    op(
        "cancelShipment",
        "DELETE",
        "/mfn/v0/shipments/{shipmentId}",
        true,
        false,
    ),
    op(
        "cancelShipmentOld",
        "PUT",
        "/mfn/v0/shipments/{shipmentId}/cancel",
        true,
        false,
    ),
    op("createShipment", "POST", "/mfn/v0/shipments", true, false),
    // Reports 2021-06-30: only the specific path (restricted report types).
    op(
        "getReportDocument",
        "GET",
        "/reports/2021-06-30/documents/{reportDocumentId}",
        false,
        false,
    ),
    // Shipment Invoicing v0, Shipping v1
    op(
        "getShipmentDetails",
        "GET",
        "/fba/outbound/brazil/v0/shipments/{shipmentId}",
        true,
        false,
    ),
    op(
        "getShippingShipment",
        "GET",
        "/shipping/v1/shipments/{shipmentId}",
        true,
        false,
    ),
    // Easy Ship 2022-03-23
    op(
        "createScheduledPackageBulk",
        "POST",
        "/easyShip/2022-03-23/packages/bulk",
        true,
        false,
    ),
    // Direct Fulfillment Orders v1 and 2021-12-28
    op(
        "getOrders",
        "GET",
        "/vendor/directFulfillment/orders/v1/purchaseOrders",
        true,
        false,
    ),
    op(
        "getOrder",
        "GET",
        "/vendor/directFulfillment/orders/v1/purchaseOrders/{purchaseOrderNumber}",
        true,
        false,
    ),
    op(
        "getOrders",
        "GET",
        "/vendor/directFulfillment/orders/2021-12-28/purchaseOrders",
        true,
        false,
    ),
    op(
        "getOrder",
        "GET",
        "/vendor/directFulfillment/orders/2021-12-28/purchaseOrders/{purchaseOrderNumber}",
        true,
        false,
    ),
    // Direct Fulfillment Shipping v1 and 2021-12-28
    op(
        "getShippingLabels",
        "GET",
        "/vendor/directFulfillment/shipping/v1/shippingLabels",
        true,
        false,
    ),
    op(
        "getShippingLabel",
        "GET",
        "/vendor/directFulfillment/shipping/v1/shippingLabels/{purchaseOrderNumber}",
        true,
        false,
    ),
    op(
        "createShippingLabels",
        "POST",
        "/vendor/directFulfillment/shipping/v1/shippingLabels/{purchaseOrderNumber}",
        true,
        false,
    ),
    op(
        "getPackingSlips",
        "GET",
        "/vendor/directFulfillment/shipping/v1/packingSlips",
        true,
        false,
    ),
    op(
        "getPackingSlip",
        "GET",
        "/vendor/directFulfillment/shipping/v1/packingSlips/{purchaseOrderNumber}",
        true,
        false,
    ),
    op(
        "getCustomerInvoices",
        "GET",
        "/vendor/directFulfillment/shipping/v1/customerInvoices",
        true,
        false,
    ),
    op(
        "getCustomerInvoice",
        "GET",
        "/vendor/directFulfillment/shipping/v1/customerInvoices/{purchaseOrderNumber}",
        true,
        false,
    ),
    op(
        "getShippingLabels",
        "GET",
        "/vendor/directFulfillment/shipping/2021-12-28/shippingLabels",
        true,
        false,
    ),
    op(
        "getShippingLabel",
        "GET",
        "/vendor/directFulfillment/shipping/2021-12-28/shippingLabels/{purchaseOrderNumber}",
        true,
        false,
    ),
    op(
        "createShippingLabels",
        "POST",
        "/vendor/directFulfillment/shipping/2021-12-28/shippingLabels/{purchaseOrderNumber}",
        true,
        false,
    ),
    op(
        "getPackingSlips",
        "GET",
        "/vendor/directFulfillment/shipping/2021-12-28/packingSlips",
        true,
        false,
    ),
    op(
        "getPackingSlip",
        "GET",
        "/vendor/directFulfillment/shipping/2021-12-28/packingSlips/{purchaseOrderNumber}",
        true,
        false,
    ),
    op(
        "getCustomerInvoices",
        "GET",
        "/vendor/directFulfillment/shipping/2021-12-28/customerInvoices",
        true,
        false,
    ),
    op(
        "getCustomerInvoice",
        "GET",
        "/vendor/directFulfillment/shipping/2021-12-28/customerInvoices/{purchaseOrderNumber}",
        true,
        false,
    ),
];

/// The restricted operation a request (method and path, no query) is, if any. A path may be
/// specific or already generic.
pub fn find(method: &str, path: &str) -> Option<&'static RestrictedOperation> {
    let path = path.split('?').next().unwrap_or(path);
    RESTRICTED_OPERATIONS
        .iter()
        .find(|op| op.method.eq_ignore_ascii_case(method) && template_matches(op.path, path))
}

/// Whether `path` is an instance of `template` (or the template itself).
fn template_matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.trim_end_matches('/').split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) => {
                let placeholder = ts.starts_with('{') && ts.ends_with('}');
                if placeholder {
                    if ps.is_empty() {
                        return false;
                    }
                } else if ts != ps {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The canonical form of one resource: upper-case method, the generic path where Amazon allows
/// it, data elements sorted and deduplicated (and dropped where they do not apply).
pub fn canonical(resource: &RestrictedResource) -> RestrictedResource {
    let method = resource.method.trim().to_ascii_uppercase();
    let found = find(&method, &resource.path);
    let path = match found {
        Some(op) if op.generic => op.path.to_owned(),
        _ => resource.path.clone(),
    };
    let mut data_elements = if found.is_none_or(|op| op.data_elements) {
        resource.data_elements.clone()
    } else {
        Vec::new()
    };
    data_elements.sort();
    data_elements.dedup();
    RestrictedResource {
        method,
        path,
        data_elements,
    }
}

/// The canonical form of a whole request: each resource canonical, sorted, deduplicated.
pub fn canonical_set(resources: &[RestrictedResource]) -> Vec<RestrictedResource> {
    let mut set: Vec<RestrictedResource> = resources.iter().map(canonical).collect();
    set.sort();
    set.dedup();
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, path: &str, elements: &[&str]) -> RestrictedResource {
        RestrictedResource {
            method: method.into(),
            path: path.into(),
            data_elements: elements.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn specific_paths_become_generic_where_allowed() {
        let c = canonical(&r(
            "GET",
            "/orders/v0/orders/902-1845936-5435065",
            &["shippingAddress", "buyerInfo"],
        ));
        assert_eq!(c.path, "/orders/v0/orders/{orderId}");
        assert_eq!(c.data_elements, vec!["buyerInfo", "shippingAddress"]);
        // The report document stays specific.
        let doc = canonical(&r("GET", "/reports/2021-06-30/documents/amzn1.doc.123", &[]));
        assert_eq!(doc.path, "/reports/2021-06-30/documents/amzn1.doc.123");
        // Data elements only where they apply.
        let addr = canonical(&r(
            "get",
            "/orders/v0/orders/902-1845936-5435065/address",
            &["buyerInfo"],
        ));
        assert!(addr.data_elements.is_empty());
        // Unknown operations pass as asked.
        let other = canonical(&r("GET", "/something/v1/else", &["x"]));
        assert_eq!(other.path, "/something/v1/else");
        assert_eq!(other.data_elements, vec!["x"]);
        // The method matters.
        assert!(find("POST", "/orders/v0/orders/1").is_none());
        assert_eq!(
            find("DELETE", "/mfn/v0/shipments/abc").unwrap().operation,
            "cancelShipment"
        );
        assert!(find("GET", "/orders/v0/orders//address").is_none());
    }

    #[test]
    fn equal_requests_have_one_canonical_set() {
        let a = canonical_set(&[
            r("GET", "/orders/v0/orders/111-1111111-1111111/address", &[]),
            r("GET", "/orders/v0/orders/222-2222222-2222222", &["buyerInfo"]),
        ]);
        let b = canonical_set(&[
            r("GET", "/orders/v0/orders/{orderId}", &["buyerInfo", "buyerInfo"]),
            r("get", "/orders/v0/orders/333-3333333-3333333/address", &[]),
            r("GET", "/orders/v0/orders/444-4444444-4444444/address", &[]),
        ]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }
}
