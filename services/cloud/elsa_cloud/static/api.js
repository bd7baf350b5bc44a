// The cloud's operator API as the page reads it: GET only, the admin token as a bearer token
// in a header (never in a URL), paths relative to the page so a path prefix keeps working.

/** The cloud answered with an error status. */
export class ApiError extends Error {
  constructor(path, status, detail) {
    super(`${path}: ${status} ${detail}`);
    this.path = path;
    this.status = status;
    this.detail = detail;
  }
}

/** The cloud refused the token (401 without a valid one, 403 with another one). */
export class TokenRejected extends ApiError {}

/** The request never got an answer (cloud down, network gone). */
export class Unreachable extends Error {
  constructor(path, cause) {
    super(`${path}: ${cause && cause.message ? cause.message : cause}`);
    this.path = path;
  }
}

/** GET ``path`` (relative, e.g. "v1/runs") as JSON with ``token``; throws the errors above. */
export async function getJson(path, token) {
  let response;
  try {
    response = await fetch(path, {
      headers: { authorization: `Bearer ${token}`, accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch (err) {
    throw new Unreachable(path, err);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    const Kind = response.status === 401 || response.status === 403 ? TokenRejected : ApiError;
    throw new Kind(path, response.status, detail);
  }
  if (body === null) throw new ApiError(path, response.status, "the answer is not JSON");
  return body;
}
