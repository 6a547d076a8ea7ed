# The REAL DSI + DSOpal (opalr) + dsBaseClient through the coordinator's relay: two
# nodes (each its own base URL /nodes/<id> on the relay, each its own relay token),
# both served by the same test gateway, so together they hold the table twice. opalr
# sends the token on its login check only; every later call carries only cookies (the
# relay's sealed session cookie and the node gateway's opalsid). Every number is held
# against plain R on the pooled rows. Run by test_relay_opal_cookie.py when
# DSGATEWAY_REAL_R_LIB names a library with those packages.
#
# Environment: DSG_RELAY (http://localhost:port: opalr refuses other plain-http hosts),
# DSG_NODE_A, DSG_NODE_B (node ids), DSG_TOKEN_A, DSG_TOKEN_B (relay tokens), DSG_TABLE
# (project.folder.table), DSG_POOLED (CSV of the table's rows). Output: TAP lines; the
# exit status is the number of failed checks.

# What the real-client scripts share, next to this script: DSI, DSOpal, dsBaseClient,
# env(), the TAP helpers (check, close_to, must), and the pooled rows `one` and `P`
# (the table twice: what the two nodes hold together).
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "real_clients.R"))

builder <- newDSLoginBuilder()
for (node in c("A", "B")) {
  builder$append(
    server = paste0("node_", tolower(node)), # syntactic: dsBaseClient builds R code from it
    url = paste0(env("DSG_RELAY"), "/nodes/", env(paste0("DSG_NODE_", node))),
    token = env(paste0("DSG_TOKEN_", node)), driver = "OpalDriver", profile = "default",
    table = env("DSG_TABLE")
  )
}
conns <- must(suppressWarnings(datashield.login(builder$build(), assign = TRUE, symbol = "D")))
check("datashield.login with DSOpal through the relay: both nodes, table assigned", length(conns) == 2)
if (is.null(conns)) quit(status = 1)

dims <- must(ds.dim("D", datasources = conns))
check("ds.dim: combined rows and columns", identical(as.numeric(dims[[3]]), as.numeric(c(nrow(P), ncol(P)))))
m <- must(ds.mean("D$bmi", type = "combine", datasources = conns))$Global.Mean
check("ds.mean = mean() of the pooled rows", close_to(m[1, "EstimatedMean"], mean(P$bmi, na.rm = TRUE)))
v <- must(ds.var("D$age", type = "combine", datasources = conns))$Global.Variance
check("ds.var = var() of the pooled rows", close_to(v[1, "EstimatedVar"], var(P$age)))
t1 <- must(ds.table("D$sex", datasources = conns))$output.list$TABLES.COMBINED_all.sources_counts
check("ds.table = table() of the pooled rows", identical(as.numeric(t1[1:2]), as.numeric(table(P$sex))))
g <- must(ds.glm("bmi ~ age + sex", data = "D", family = "gaussian", datasources = conns, viewIter = FALSE))
ref <- summary(glm(bmi ~ age + sex, data = P, family = gaussian))$coefficients
check("ds.glm (gaussian) = glm() on the pooled rows", close_to(g$coefficients[, "Estimate"], ref[, 1], 1e-6))
must(ds.assign(toAssign = "D$age", newobj = "age2", datasources = conns))
check("ds.assign, then ds.mean of it", close_to(must(ds.mean("age2", type = "combine", datasources = conns))$Global.Mean[1, 1], mean(P$age)))
check("ds.ls: the assigned object on both nodes", all(sapply(must(ds.ls(datasources = conns)), function(x) "age2" %in% x$objects.found)))

must(datashield.logout(conns))
check("datashield.logout", TRUE)
quit(status = failures)
