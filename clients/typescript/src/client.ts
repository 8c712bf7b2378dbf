// The client: openapi-fetch over the types openapi-typescript generated from
// docs/openapi.json. Nothing here is written by hand but the base URL and the token.

import createClient, { type Client } from "openapi-fetch";

import type { paths } from "./generated/openapi.js";

export type CourierApi = Client<paths>;

/** A client for the server at `baseUrl`, authenticated as a device when given its token. */
export function courierApi(baseUrl: string, accessToken?: string): CourierApi {
  return createClient<paths>({
    baseUrl,
    headers: accessToken === undefined ? {} : { Authorization: `Bearer ${accessToken}` },
  });
}
