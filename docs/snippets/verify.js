// Verify a webhook from dj-webhooks (or any Standard Webhooks sender) in Node.js.
// `headers` holds the request's headers (lower-case names), `rawBody` the body exactly as
// received (a Buffer or string), `secret` the target's "whsec_..." secret.
const crypto = require("crypto");

function verifyWebhook(secret, headers, rawBody, toleranceSeconds = 300) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) {
    throw new Error("missing webhook headers");
  }
  const now = Math.floor(Date.now() / 1000);
  if (!/^\d+$/.test(timestamp) || Math.abs(now - Number(timestamp)) > toleranceSeconds) {
    throw new Error("timestamp outside the tolerance");
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = crypto
    .createHmac("sha256", key)
    .update(`${id}.${timestamp}.`)
    .update(rawBody)
    .digest();
  // Several signatures are sent while the sender rotates its secret: any may match.
  const valid = signatures.split(" ").some((entry) => {
    const [version, value] = entry.split(",");
    if (version !== "v1" || !value) return false;
    const given = Buffer.from(value, "base64");
    return given.length === expected.length && crypto.timingSafeEqual(given, expected);
  });
  if (!valid) {
    throw new Error("no valid signature");
  }
  return JSON.parse(rawBody.toString());
}

module.exports = { verifyWebhook };
