// Pays one request with the official TypeScript x402 client; prints what came back as one JSON line.
// Usage: node pay_with_official_client.mjs <url> <method> <json body or ""> ; env: PAYER_KEY, NETWORK, ASSET, CAP (atomic, optional)
import { x402Client, wrapFetchWithPayment, decodePaymentResponseHeader } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import { privateKeyToAccount } from "viem/accounts";

const [url, method, body] = process.argv.slice(2);
const account = privateKeyToAccount(process.env.PAYER_KEY);
const client = new x402Client();
registerExactEvmScheme(client, { signer: account, networks: [process.env.NETWORK] });
client.register(process.env.NETWORK, new UptoEvmScheme(account));
const allowed = { network: process.env.NETWORK, asset: process.env.ASSET };
if (process.env.CAP) allowed.maxAmountPerPayment = process.env.CAP;
client.setSpendControls({ allowedAssets: [allowed] });
const paying = wrapFetchWithPayment(fetch, client);
const init = { method, headers: body ? { "content-type": "application/json" } : {} };
if (body) init.body = body;
const response = await paying(url, init);
const header = response.headers.get("PAYMENT-RESPONSE");
console.log(JSON.stringify({
  status: response.status,
  cacheControl: response.headers.get("cache-control"),
  settlement: header ? decodePaymentResponseHeader(header) : null,
  text: await response.text(),
}));
