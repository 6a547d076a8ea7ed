# The REAL DataSHIELD R clients against the gateway: DSI + DSMolgenisArmadillo (the
# Armadillo face) and DSI + DSOpal/opalr (the Opal face), both logged in to the same
# gateway as two "studies", and dsBaseClient's own ds.* functions on them. Every number
# is held against plain R on the pooled rows (the table twice, as the two studies hold
# it). Run by test_real_r_clients.py only when DSGATEWAY_REAL_R_LIB names a library
# with those packages (scripts/install-real-r-clients.sh makes one).
#
# Environment: DSG_URL (the gateway), DSG_OPAL_URL (the same, as http://localhost:port:
# opalr refuses other plain-http hosts), DSG_USER, DSG_PASSWORD, DSG_PROJECT, DSG_FOLDER,
# DSG_TABLE, DSG_POOLED (CSV of the table's rows). Output: TAP lines; the exit status is
# the number of failed checks.

suppressPackageStartupMessages(library(DSMolgenisArmadillo))
# What the real-client scripts share, next to this script: DSI, DSOpal, dsBaseClient,
# env(), the TAP helpers (check, close_to, must), and the pooled rows `one` and `P`
# (the table twice: what the two logins hold together).
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "real_clients.R"))

builder <- newDSLoginBuilder()
builder$append(
  server = "armadillo", url = env("DSG_URL"), user = env("DSG_USER"),
  password = env("DSG_PASSWORD"), driver = "ArmadilloDriver", profile = "default",
  table = paste(env("DSG_PROJECT"), env("DSG_FOLDER"), env("DSG_TABLE"), sep = "/")
)
builder$append(
  server = "opal", url = env("DSG_OPAL_URL"), user = env("DSG_USER"),
  password = env("DSG_PASSWORD"), driver = "OpalDriver", profile = "default",
  table = paste(env("DSG_PROJECT"), env("DSG_FOLDER"), env("DSG_TABLE"), sep = ".")
)
conns <- must(suppressWarnings(datashield.login(builder$build(), assign = TRUE, symbol = "D")))
check("datashield.login: both drivers log in and assign the table", length(conns) == 2)
if (is.null(conns)) quit(status = 1)

# ---- descriptives
dims <- must(ds.dim("D", datasources = conns))
check("ds.dim: combined rows and columns", identical(as.numeric(dims[[3]]), as.numeric(c(nrow(P), ncol(P)))))
check("ds.colnames", identical(must(ds.colnames("D", datasources = conns))$opal, names(one)))
check("ds.class", identical(must(ds.class("D$sex", datasources = conns))$armadillo, "factor"))
check("ds.length (combined)", must(ds.length("D$age", type = "combine", datasources = conns))[[1]] == nrow(P))
m <- must(ds.mean("D$bmi", type = "combine", datasources = conns))$Global.Mean
check("ds.mean = mean() of the pooled rows", close_to(m[1, "EstimatedMean"], mean(P$bmi, na.rm = TRUE)))
check("ds.mean: missing and valid counts", m[1, "Nmissing"] == sum(is.na(P$bmi)) && m[1, "Nvalid"] == sum(!is.na(P$bmi)))
v <- must(ds.var("D$bmi", type = "combine", datasources = conns))$Global.Variance
check("ds.var = var() of the pooled rows", close_to(v[1, "EstimatedVar"], var(P$bmi, na.rm = TRUE)))
q <- must(ds.quantileMean("D$age", type = "split", datasources = conns))
check("ds.quantileMean (split): each study's quantiles", close_to(
  q$armadillo[1:7], quantile(one$age, c(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95))
))
check("ds.numNA", identical(unlist(must(ds.numNA("D$bmi", datasources = conns))), c(armadillo = sum(is.na(one$bmi)), opal = sum(is.na(one$bmi)))))
check("ds.levels", identical(must(ds.levels("D$sex", datasources = conns))$opal$Levels, levels(P$sex)))
s <- must(ds.summary("D$age", datasources = conns))
check("ds.summary (numeric): length and mean", s$opal$length == nrow(one) && close_to(s$opal$`quantiles & mean`[["Mean"]], mean(one$age)))
check("ds.exists", all(unlist(must(ds.exists("D", datasources = conns)))))
check("ds.isValid", all(unlist(must(ds.isValid("D$age", datasources = conns)))))

# ---- tables
t1 <- must(ds.table("D$sex", datasources = conns))$output.list$TABLES.COMBINED_all.sources_counts
check("ds.table (1D) = table() of the pooled rows", identical(as.numeric(t1[1:2]), as.numeric(table(P$sex))))
t2 <- must(ds.table("D$sex", "D$outcome", datasources = conns))$output.list$TABLES.COMBINED_all.sources_counts
check("ds.table (2D) = table() of the pooled rows", identical(as.numeric(t2[1:2, 1:2]), as.numeric(table(P$sex, P$outcome))))

# ---- correlation, covariance
cr <- must(ds.cor("D$age", "D$bmi", type = "combine", datasources = conns))
check("ds.cor = cor() on complete cases", close_to(cr$`Correlation Matrix`[1, 2], cor(P$age, P$bmi, use = "complete.obs")))
cv <- must(ds.cov("D$age", "D$bmi", type = "combine", datasources = conns))
check("ds.cov = cov() on complete cases", close_to(cv$`Variance-Covariance Matrix`[1, 2], cov(P$age, P$bmi, use = "complete.obs")))

# ---- regression
g <- must(ds.glm("bmi ~ age + sex", data = "D", family = "gaussian", datasources = conns, viewIter = FALSE))
ref <- summary(glm(bmi ~ age + sex, data = P, family = gaussian))$coefficients
check("ds.glm (gaussian): estimates = glm() on the pooled rows", close_to(g$coefficients[, "Estimate"], ref[, 1], 1e-6))
b <- must(ds.glm("outcome ~ age + bmi", data = "D", family = "binomial", datasources = conns, viewIter = FALSE))
ref <- summary(glm(outcome ~ age + bmi, data = P, family = binomial, control = glm.control(epsilon = 1e-14)))$coefficients
check("ds.glm (binomial): estimates = glm()", close_to(b$coefficients[, "Estimate"], ref[, 1], 1e-6))
check("ds.glm (binomial): standard errors = glm()", close_to(b$coefficients[, "Std. Error"], ref[, 2], 1e-4))

# ---- server-side objects
must(ds.assign(toAssign = "D$age", newobj = "age2", datasources = conns))
check("ds.assign, then ds.mean of the new object", close_to(must(ds.mean("age2", type = "combine", datasources = conns))$Global.Mean[1, 1], mean(P$age)))
must(ds.asFactor("D$outcome", newobj.name = "outf", datasources = conns))
check("ds.asFactor", identical(must(ds.class("outf", datasources = conns))$opal, "factor"))
must(ds.asNumeric("D$sex", newobj = "sexnum", datasources = conns))
check("ds.asNumeric", identical(must(ds.class("sexnum", datasources = conns))$armadillo, "numeric"))
must(ds.dataFrameSubset(df.name = "D", V1.name = "D$outcome", V2.name = "1", Boolean.operator = "==", newobj = "cases", datasources = conns))
check("ds.dataFrameSubset = the pooled rows with outcome 1", must(ds.dim("cases", type = "combine", datasources = conns))[[1]][1] == sum(P$outcome == 1))
syms <- datashield.symbols(conns)
check("datashield.symbols (both drivers)", all(c("D", "age2", "outf", "sexnum", "cases") %in% syms$armadillo) && setequal(syms$armadillo, syms$opal))
settings <- must(ds.listDisclosureSettings(datasources = conns))
check("ds.listDisclosureSettings", settings$ds.disclosure.settings$opal$nfilter.tab == 3)

# ---- errors reach the user in the clients' own words
err <- tryCatch({
  datashield.aggregate(conns, quote(systemDS(D)))
  ""
}, error = function(e) paste(unlist(DSI::datashield.errors()), collapse = " | "))
check("a method the profile lacks: both drivers say so", grepl("No such DataSHIELD 'AGGREGATE' method with name: systemDS", err) && lengths(regmatches(err, gregexpr("systemDS", err))) == 2)
err <- tryCatch({
  ds.mean("D$nosuch", datasources = conns)
  ""
}, error = function(e) conditionMessage(e))
check("a column that does not exist: no crash of the client", is.character(err))

datashield.logout(conns)
cat("1..", count, "\n", sep = "")
quit(status = min(failures, 100))
