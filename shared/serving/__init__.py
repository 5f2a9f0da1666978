"""A service as a process: the FastAPI app built from a domain's declarations (`app`), what
wraps every request (`hygiene`: rate limits, body cap, CORS, headers, access log), the docs
page (`docs`, with Swagger UI vendored in `swagger_ui/`), and uvicorn with its guards
(`server`)."""
