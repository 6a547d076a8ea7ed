# Drives the gateway's Armadillo API exactly as DSI + DSMolgenisArmadillo 4.0.x do, with
# httr and jsonlite only (what the real client uses underneath): raw-body select-profile
# with no Content-Type, the session cookie kept by the httr handle, async=TRUE POSTs,
# polling /lastcommand with DSI's back-off, unserialize() of /lastresult, the FAILED
# message parsed as the client does, and login with a bearer token.
#
# Environment: DSG_URL, DSG_USER, DSG_PASSWORD, DSG_TABLE (project/folder/table with
# columns age and sex), optionally DSG_TOKEN (a JWT for the same node), DSG_OTHER_USER
# and DSG_OTHER_PASSWORD (a user who cannot read DSG_TABLE's project).
# DSG_AUTH=token: the main session logs in with DSG_TOKEN (DSMolgenisArmadillo's
# `token=`, a Bearer header on every call) instead of DSG_USER's password; the checks
# are the same. This is how the script runs through the coordinator's relay, which
# only knows relay tokens.
# Output: TAP lines; the exit status is the number of failed checks (0: all passed).

# What the httr scripts share, next to this script: httr and jsonlite, url, user,
# password and table (DSG_URL, DSG_USER, DSG_PASSWORD, DSG_TABLE), and the TAP helpers
# (check, close_to, must).
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "httr_client.R"))
token <- Sys.getenv("DSG_TOKEN")
by_token <- Sys.getenv("DSG_AUTH") == "token"
# The main session's login, by password (Basic) or by token (Bearer).
login <- function(password = Sys.getenv("DSG_PASSWORD"), profile = "default") {
  if (by_token) {
    bad <- password != Sys.getenv("DSG_PASSWORD")
    ds_connect(url, token = if (bad) paste0(token, "x") else token, profile = profile)
  } else {
    ds_connect(url, user, password, profile = profile)
  }
}

safely <- function(expr) {
  tryCatch(expr, error = function(e) {
    cat("#   error:", conditionMessage(e), "\n")
    NULL
  })
}
check_error <- function(name, expr, pattern) {
  msg <- tryCatch({
    force(expr)
    "<no error>"
  }, error = function(e) conditionMessage(e))
  ok <- grepl(pattern, msg)
  if (!ok) cat("#   got:", msg, "\n")
  check(name, ok)
}

# ---- what DSMolgenisArmadillo does (R/ArmadilloDriver.R, ArmadilloConnection.R, utils.R)

auth_header <- function(conn) {
  if (nchar(conn$token) > 0) c(Authorization = paste0("Bearer ", conn$token)) else c()
}

handle_request_error <- function(response) {
  code <- response$status_code
  if (code == 400) stop(paste0("Bad request: ", content(response)$message), call. = FALSE)
  if (code == 401) stop("Unauthorized", call. = FALSE)
  if (code == 403) stop("Access denied", call. = FALSE)
  if (code == 404) stop("Not found", call. = FALSE)
  if (code == 500) {
    stop(paste0("Internal server error: ", content(response, "text")), call. = FALSE)
  }
}

ds_connect <- function(url, username = "", password = "", token = "", profile = "default") {
  h <- handle(url)
  if (nchar(username) > 0) {
    encoded <- base64_enc(charToRaw(paste0(username, ":", password)))
    header <- add_headers(Authorization = paste0("Basic ", encoded))
  } else {
    header <- add_headers(Authorization = paste0("Bearer ", token))
  }
  profile_to_select <- if (profile == "") "default" else profile
  response <- POST(handle = h, path = "/select-profile", body = profile_to_select, config = header)
  handle_request_error(response)
  list(handle = h, token = token, name = "server1", status = response$status_code,
       cookies = cookies(response), response = response)
}

handle_last_command_error <- function(conn) {
  command <- GET(handle = conn$handle, path = "/lastcommand",
                 config = add_headers(auth_header(conn)))
  json <- content(command)
  if (command$status == 404) json <- list(status = "404")
  if (json$status == "FAILED") {
    # stringr::str_extract(message, "\\{(.*)\\}"): the first "{" to the last "}"
    m <- regmatches(json$message, regexpr("\\{(.*)\\}", json$message, perl = TRUE))
    message <- fromJSON(m)$message
    stop(paste0("Command failed on ", conn$name, ": Error whilst evaluating '",
                json$expression, "' -> ", message), call. = FALSE)
  }
}

retry_until_last_result <- function(conn) {
  response <- RETRY(verb = "GET", handle = conn$handle, path = "/lastresult",
                    terminate_on = c(200, 404, 401),
                    config = add_headers(c(Accept = "application/octet-stream",
                                           auth_header(conn))))
  if (response$status_code == 404) return(handle_last_command_error(conn))
  handle_request_error(response)
  value <- content(response)
  if (is.null(value)) NULL else unserialize(value)
}

is_completed <- function(conn) {
  result <- GET(handle = conn$handle, path = "/lastcommand", config = add_headers(auth_header(conn)))
  status <- content(result)$status
  status == "COMPLETED" || status == "FAILED"
}

# DSI's .getSleepTime: 0.05 s for the first second, then 1 s, 2 s, 10 s, 60 s.
sleep_time <- function(checks) {
  if (checks < 20) 0.05 else if (checks < 29) 1 else if (checks < 54) 2 else 10
}

# DSI's polling loop for one connection: dsIsCompleted until true, then dsFetch
# (aggregate) or dsGetInfo (assign), which both go through /lastresult.
poll <- function(conn) {
  checks <- 1
  while (!is_completed(conn)) {
    Sys.sleep(sleep_time(checks))
    checks <- checks + 1
  }
  retry_until_last_result(conn)
}

ds_assign_table <- function(conn, symbol, table, variables = NULL, async = TRUE) {
  query <- list(table = table, symbol = symbol, async = async)
  if (!is.null(variables)) query$variables <- paste(unlist(variables), collapse = ",")
  response <- POST(handle = conn$handle, path = "/load-table", query = query,
                   config = add_headers(auth_header(conn)))
  handle_request_error(response)
  if (async) poll(conn) else retry_until_last_result(conn)
  invisible(response)
}

ds_assign_expr <- function(conn, symbol, expr, async = TRUE) {
  response <- POST(handle = conn$handle, query = list(async = async),
                   path = paste0("/symbols/", symbol), body = expr,
                   config = add_headers(c("Content-Type" = "text/plain", auth_header(conn))))
  handle_request_error(response)
  if (async) poll(conn) else retry_until_last_result(conn)
  invisible(response)
}

ds_aggregate <- function(conn, expr, async = TRUE) {
  response <- POST(handle = conn$handle, query = list(async = async), path = "/execute",
                   body = expr,
                   config = add_headers(c("Content-Type" = "text/plain", auth_header(conn))))
  handle_request_error(response)
  if (async) poll(conn) else retry_until_last_result(conn)
}

ds_get <- function(conn, path) {
  response <- GET(handle = conn$handle, path = path, config = add_headers(auth_header(conn)))
  handle_request_error(response)
  content(response)
}

ds_symbols <- function(conn) unlist(ds_get(conn, "/symbols"))

# ---- the session

info <- GET(paste0(url, "/actuator/info"))
check("actuator/info answers JSON without credentials",
      info$status_code == 200 && is.list(content(info)))

check_error("a wrong password is refused",
            login(paste0(password, "x")), "^Unauthorized$")
check_error("an unknown profile is refused",
            login(password, profile = "nosuchprofile"), "Not found")

conn <- login(password, profile = "")
check("select-profile with an empty body answers 204", conn$status == 204)
check("select-profile sets the session cookie", "JSESSIONID" %in% conn$cookies$name)
check("the cookie is HttpOnly with Path=/",
      grepl("HttpOnly", conn$response$headers[["set-cookie"]]) &&
        grepl("Path=/", conn$response$headers[["set-cookie"]]))

profiles <- safely(ds_get(conn, "/profiles"))
check("/profiles lists default as current",
      "default" %in% unlist(profiles$available) && profiles$current == "default")

tables <- safely(unlist(ds_get(conn, "/tables")))
check("/tables lists the table", table %in% tables)
has <- HEAD(handle = conn$handle, path = paste0("/tables/", table),
            config = add_headers(auth_header(conn)))
check("HEAD /tables/<table> is 200", has$status_code == 200)
hasnt <- HEAD(handle = conn$handle, path = "/tables/nosuch/folder/table",
              config = add_headers(auth_header(conn)))
check("HEAD of a missing table is 404", hasnt$status_code == 404)
check("/resources is an empty list", length(ds_get(conn, "/resources")) == 0)

safely(ds_assign_table(conn, "D", table))
check("load-table (async) makes symbol D", "D" %in% ds_symbols(conn))
last <- safely(ds_get(conn, "/lastcommand"))
check("/lastcommand has the Armadillo fields",
      all(c("id", "expression", "withResult", "status", "createDate") %in% names(last)) &&
        last$status == "COMPLETED" && identical(last$withResult, FALSE))
check("/lastcommand dates are ISO-8601 UTC",
      grepl("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(\\.\\d+)?Z$", last$createDate, perl = TRUE) &&
        grepl("Z$", last$endDate))
nores <- GET(handle = conn$handle, path = "/lastresult",
             config = add_headers(c(Accept = "application/octet-stream", auth_header(conn))))
check("/lastresult of an assignment is 404", nores$status_code == 404)

safely(ds_assign_table(conn, "S", table, variables = c("age", "sex"), async = FALSE))
check("load-table (sync, two variables) makes symbol S", "S" %in% ds_symbols(conn))
check("only the listed variables were loaded",
      identical(sort(unlist(ds_aggregate(conn, "colnamesDS(\"S\")"))), c("age", "sex")))

dims <- safely(ds_aggregate(conn, "dimDS(\"D\")"))
check("dimDS(D) comes back as numbers", is.numeric(unlist(dims)) && length(unlist(dims)) >= 2)
cls <- safely(ds_aggregate(conn, "classDS(\"D$sex\")"))
check("classDS(D$sex) is factor", "factor" %in% cls)
mean <- safely(ds_aggregate(conn, "meanDS(D$age)"))
check("meanDS(D$age) has EstimatedMean",
      is.list(mean) && is.numeric(mean$EstimatedMean) && mean$EstimatedMean > 0)
again <- safely(ds_aggregate(conn, "meanDS(D$age)", async = FALSE))
check("sync /execute gives the same value", identical(again$EstimatedMean, mean$EstimatedMean))
direct <- POST(handle = conn$handle, path = "/execute", query = list(async = FALSE),
               body = "lengthDS(\"D$age\")",
               config = add_headers(c("Content-Type" = "text/plain", auth_header(conn))))
check("sync /execute answers 200 with RDS bytes",
      direct$status_code == 200 && is.numeric(unserialize(content(direct))))

invisible(safely(ds_assign_expr(conn, "age2", "as.numeric(D$age)")))
check("assign expression makes age2", "age2" %in% ds_symbols(conn))
check("lengthDS(age2) is the row count",
      unlist(ds_aggregate(conn, "lengthDS(\"age2\")")) == unlist(dims)[1])

check_error("an unknown function is refused at once with the reason",
            ds_aggregate(conn, "nosuchfunctionDS(D)"),
            "^Bad request: No such DataSHIELD 'AGGREGATE' method with name: nosuchfunctionDS")
check_error("a parse error is refused at once",
            ds_aggregate(conn, "meanDS(D$age[1])"), "^Bad request: .*(pars|Pars)")
check_error("an assign with an aggregate-only function is refused",
            ds_assign_expr(conn, "x", "meanDS(D$age)"),
            "^Bad request: No such DataSHIELD 'ASSIGN' method")
check_error("an R error is reported with the R message",
            ds_aggregate(conn, "meanDS(nosuchsymbol)"), "Command failed on server1: .*nosuchsymbol")
failed <- safely(ds_get(conn, "/lastcommand"))
check("a FAILED command carries the Armadillo message format",
      failed$status == "FAILED" && startsWith(failed$message, "Error evaluating: {\""))
check_error("a bad symbol name is a bad request",
            ds_assign_expr(conn, "_bad", "as.numeric(D$age)"), "^Bad request")

del <- DELETE(handle = conn$handle, path = "/symbols/age2",
              config = add_headers(auth_header(conn)))
check("DELETE /symbols/age2", del$status_code == 200 && !("age2" %in% ds_symbols(conn)))

methods <- safely(ds_get(conn, "/methods/aggregate"))
check("/methods/aggregate has name, function, package, version",
      length(methods) > 0 && all(c("name", "function", "package", "version") %in% names(methods[[1]])))
assign_methods <- safely(ds_get(conn, "/methods/assign"))
check("/methods/assign lists assign methods", length(assign_methods) > 0)
packages <- safely(ds_get(conn, "/packages"))
check("/packages have name and version",
      length(packages) > 0 && !is.null(packages[[1]]$name) && !is.null(packages[[1]]$version))

save <- POST(handle = conn$handle, path = "/workspaces/r-test-ws",
             config = add_headers(auth_header(conn)))
check("save workspace answers 201", save$status_code == 201)
ws <- safely(ds_get(conn, "/workspaces"))
check("the workspace is listed with name, lastModified and size",
      any(vapply(ws, function(w) w$name == "r-test-ws" && !is.null(w$lastModified) &&
                   !is.null(w$size), logical(1))))

# A new login on the same handle (same cookie jar): a fresh R session.
relog_auth <- if (by_token) auth_header(conn) else c(Authorization = paste0(
  "Basic ", base64_enc(charToRaw(paste0(user, ":", password)))))
relog <- POST(handle = conn$handle, path = "/select-profile", body = "default",
              config = add_headers(relog_auth))
conn2 <- conn
check("a new select-profile gives an empty session",
      relog$status_code == 204 && length(ds_symbols(conn2)) == 0)
restore <- POST(handle = conn2$handle, path = "/load-workspace", query = list(id = "r-test-ws"),
                config = add_headers(auth_header(conn2)))
check("load-workspace restores the symbols",
      restore$status_code == 200 && all(c("D", "S") %in% ds_symbols(conn2)))
check("the restored data is usable", unlist(ds_aggregate(conn2, "dimDS(\"D\")"))[1] == unlist(dims)[1])
rm_ws <- DELETE(handle = conn2$handle, path = "/workspaces/r-test-ws",
                config = add_headers(auth_header(conn2)))
check("DELETE /workspaces/<id>",
      rm_ws$status_code == 200 &&
        !any(vapply(ds_get(conn2, "/workspaces"), function(w) w$name == "r-test-ws", logical(1))))

out <- POST(handle = conn2$handle, path = "/logout", config = add_headers(auth_header(conn2)))
check("logout answers 200", out$status_code == 200)
after <- GET(handle = conn2$handle, path = "/symbols", config = add_headers(auth_header(conn2)))
check("after logout the session is gone (401)", after$status_code == 401)

# ---- a token user: Bearer on every call

if (nchar(token) > 0) {
  tconn <- ds_connect(url, token = token)
  check("bearer login answers 204", tconn$status == 204)
  safely(ds_assign_table(tconn, "T", table))
  check("bearer user can load a readable table and aggregate",
        "factor" %in% ds_aggregate(tconn, "classDS(\"T$sex\")"))
  nobearer <- GET(paste0(url, "/symbols"), config = add_headers(Authorization = "Bearer x.y.z"))
  check("a forged bearer token is refused (401)", nobearer$status_code == 401)
  invisible(POST(handle = tconn$handle, path = "/logout", config = add_headers(auth_header(tconn))))
}

other <- Sys.getenv("DSG_OTHER_USER")
if (nchar(other) > 0) {
  oconn <- ds_connect(url, other, Sys.getenv("DSG_OTHER_PASSWORD"))
  check("a user without the project does not see the table",
        !(table %in% unlist(ds_get(oconn, "/tables"))) &&
          HEAD(handle = oconn$handle, path = paste0("/tables/", table))$status_code == 404)
  check_error("and cannot load it", ds_assign_table(oconn, "D", table), "^Not found$")
  invisible(POST(handle = oconn$handle, path = "/logout"))
}

cat("1..", count, "\n", sep = "")
quit(status = min(failures, 100))
