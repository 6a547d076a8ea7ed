# The server functions called as dsBaseClient 6.3.3 calls them, over the gateway's
# Armadillo API (httr + jsonlite, as DSI + DSMolgenisArmadillo drive it), and what comes
# back (unserialize()d in R) checked against what dsBaseClient expects: the class, the
# element names in their order (dsBaseClient reads most results by position, e.g.
# ss.obj[[i]][[4]] in ds.var), dimensions and types, as dsBase 6.3.3 returns them.
#
# Each expression is built with the very code of the ds.* function (R/ds.*.R in
# datashield/dsBaseClient): call(...) deparsed as DSI sends it, or paste0(...).
#
# Environment: DSG_URL, DSG_USER, DSG_PASSWORD, DSG_TABLE (project/folder/table of the
# example study: id, age, sex, height, weight, bmi, smoker, visits, region, enrolled,
# outcome). Output: TAP lines; the exit status is the number of failed checks.

# What the httr scripts share, next to this script: httr and jsonlite, url, user,
# password and table (DSG_URL, DSG_USER, DSG_PASSWORD, DSG_TABLE), and the TAP helpers
# (check, close_to, must).
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])), "httr_client.R"))

# ---- DSI + DSMolgenisArmadillo over HTTP (login, async commands, /lastresult)

h <- handle(url)
login <- POST(handle = h, path = "/select-profile", body = "default",
              config = add_headers(Authorization = paste0(
                "Basic ", base64_enc(charToRaw(paste0(user, ":", password))))))
stopifnot(login$status_code == 204)

# DSI sends a call deparsed, a pasted string as it is
as_text <- function(expr) if (is.language(expr)) paste(deparse(expr), collapse = "\n") else expr

wait <- function() {
  repeat {
    status <- content(GET(handle = h, path = "/lastcommand"))$status
    if (status %in% c("COMPLETED", "FAILED")) return(status)
    Sys.sleep(0.05)
  }
}

last_result <- function() {
  response <- GET(handle = h, path = "/lastresult",
                  config = add_headers(Accept = "application/octet-stream"))
  if (response$status_code == 404) {
    command <- content(GET(handle = h, path = "/lastcommand"))
    if (identical(command$status, "FAILED")) {
      m <- regmatches(command$message, regexpr("\\{(.*)\\}", command$message, perl = TRUE))
      stop(fromJSON(m)$message, call. = FALSE)
    }
    return(NULL)
  }
  stopifnot(response$status_code == 200)
  unserialize(content(response))
}

aggregate <- function(expr) {
  text <- as_text(expr)
  response <- POST(handle = h, path = "/execute", query = list(async = TRUE), body = text,
                   config = add_headers("Content-Type" = "text/plain"))
  if (response$status_code != 201) stop("refused: ", content(response)$message, call. = FALSE)
  wait()
  last_result()
}

assign <- function(symbol, expr) {
  response <- POST(handle = h, path = paste0("/symbols/", symbol), query = list(async = TRUE),
                   body = as_text(expr), config = add_headers("Content-Type" = "text/plain"))
  if (response$status_code != 201) stop("refused: ", content(response)$message, call. = FALSE)
  wait()
  last_result()
}

safely <- function(expr) tryCatch(expr, error = function(e) {
  cat("#   error:", conditionMessage(e), "\n")
  NULL
})

load <- POST(handle = h, path = "/load-table",
             query = list(table = table, symbol = "D", async = TRUE))
stopifnot(load$status_code == 201, wait() == "COMPLETED")

# ---- objects: ds.dim, ds.colnames, ds.class, ds.length, ds.exists, ds.ls, ds.names

x <- "D"
out <- safely(aggregate(call("dimDS", x)))                              # ds.dim
check("dimDS: an integer vector of length 2", is.integer(out) && identical(out, c(500L, 11L)))
out <- safely(aggregate(call("colnamesDS", x)))                         # ds.colnames
check("colnamesDS: the column names",
      is.character(out) && identical(out[1:3], c("id", "age", "sex")) && length(out) == 11)
out <- safely(aggregate(call("classDS", "D$sex")))                      # ds.class
check("classDS: the class vector", identical(out, "factor"))
out <- safely(aggregate(call("lengthDS", "D$age")))                     # ds.length
check("lengthDS: an integer", identical(out, 500L))
out <- safely(aggregate(call("exists", "age", as.name("D"))))           # isDefined
check("exists(element, holder): TRUE", identical(out, TRUE))
out <- safely(aggregate(call("exists", "Nothing")))
check("exists of an unknown object: FALSE", identical(out, FALSE))
out <- safely(aggregate(call("lsDS", search.filter = NULL, 1L)))       # ds.ls
check("lsDS: list(environment.searched, objects.found)",
      identical(names(out), c("environment.searched", "objects.found")) &&
        identical(out$environment.searched, "R_GlobalEnv") && "D" %in% out$objects.found)
out <- safely(aggregate(call("lsDS", search.filter = "_:A:_", 1L)))
check("lsDS with a filter adds search.filter.final",
      identical(names(out), c("environment.searched", "objects.found", "search.filter.final")) &&
        identical(out$search.filter.final, "*"))
out <- safely(aggregate(call("namesDS", "D")))                          # ds.names
check("namesDS: the names of a list", identical(out[1:2], c("id", "age")))
out <- safely(aggregate(call("testObjExistsDS", "D")))                  # ds.asFactor etc.
check("testObjExistsDS: list(test.obj.exists, test.obj.class)",
      identical(names(out), c("test.obj.exists", "test.obj.class")) &&
        isTRUE(out$test.obj.exists) && identical(out$test.obj.class, "data.frame"))
out <- safely(aggregate(call("listDisclosureSettingsDS")))              # ds.listDisclosureSettings
check("listDisclosureSettingsDS: the settings, in dsBase's order",
      identical(names(out), c("datashield.privacyControlLevel", "nfilter.tab", "nfilter.subset",
                              "nfilter.glm", "nfilter.string", "nfilter.stringShort",
                              "nfilter.kNN", "nfilter.levels.density", "nfilter.levels.max",
                              "nfilter.noise", "nfilter.privacy.old")) &&
        out$nfilter.tab == 3 && identical(out$datashield.privacyControlLevel, "banana"))

# ---- summaries: ds.mean, ds.var, ds.quantileMean, ds.numNA, ds.isValid

x <- "D$bmi"
out <- safely(aggregate(as.symbol(paste0("meanDS(", x, ")"))))          # ds.mean
check("meanDS: list(EstimatedMean, Nmissing, Nvalid, Ntotal, ValidityMessage)",
      identical(names(out), c("EstimatedMean", "Nmissing", "Nvalid", "Ntotal",
                              "ValidityMessage")) &&
        out$Ntotal == 500 && out$Nvalid + out$Nmissing == 500 &&
        identical(out$ValidityMessage, "VALID ANALYSIS"))
out <- safely(aggregate(as.symbol(paste0("varDS(", x, ")"))))           # ds.var
check("varDS: list(Sum, SumOfSquares, Nmissing, Nvalid, Ntotal, ValidityMessage)",
      identical(names(out), c("Sum", "SumOfSquares", "Nmissing", "Nvalid", "Ntotal",
                              "ValidityMessage")) &&
        is.numeric(out[[1]]) && is.numeric(out[[2]]) && out[[4]] + out[[3]] == out[[5]])
out <- safely(aggregate(as.symbol(paste0("quantileMeanDS(", x, ")"))))  # ds.quantileMean
check("quantileMeanDS: the 7 quantiles and the mean, named",
      is.double(out) && identical(names(out), c("5%", "10%", "25%", "50%", "75%", "90%",
                                                "95%", "Mean")) && !is.unsorted(out[1:7]))
out <- safely(aggregate(as.symbol(paste0("numNaDS(", x, ")"))))         # ds.numNA
check("numNaDS: an integer count", is.integer(out) && length(out) == 1 && out > 0)
out <- safely(aggregate(as.symbol(paste0("isValidDS(", x, ")"))))       # ds.isValid
check("isValidDS: TRUE", identical(out, TRUE))
out <- safely(aggregate(as.symbol("isNaDS(D$bmi)")))                    # ds.glm checks
check("isNaDS: FALSE for a variable with values", identical(out, FALSE))
out <- safely(aggregate(as.symbol("checkNegValueDS(D$age)")))
check("checkNegValueDS: FALSE without negative values", identical(out, FALSE))

# ---- factors and tables: ds.levels, ds.asFactor, ds.table, ds.table1D

out <- safely(aggregate(as.symbol(paste0("levelsDS(", "D$sex", ")"))))  # ds.levels
check("levelsDS: list(Levels, ValidityMessage)",
      identical(names(out), c("Levels", "ValidityMessage")) &&
        identical(out$Levels, c("female", "male")))
levels.region <- safely(aggregate(call("asFactorDS1", "D$region")))     # ds.asFactor, step 1
check("asFactorDS1: the levels as a character vector",
      identical(levels.region, c("centre", "east", "north", "south", "west")))
safely(assign("regionf", call("asFactorDS2", "D$region",
                              paste0(levels.region, collapse = ","), FALSE, 1)))
check("asFactorDS2 (assign): a factor with those levels",
      identical(safely(aggregate(call("classDS", "regionf"))), "factor") &&
        identical(safely(aggregate(as.symbol("levelsDS(regionf)")))$Levels, levels.region))
safely(assign("dummies", call("asFactorDS2", "D$region",
                              paste0(levels.region, collapse = ","), TRUE, 1)))
check("asFactorDS2 with fixed.dummy.vars: a 0/1 matrix without the baseline",
      identical(safely(aggregate(call("dimDS", "dummies"))), c(500L, 4L)) &&
        identical(safely(aggregate(call("colnamesDS", "dummies"))),
                  paste0("DV", levels.region[-1])))
out <- safely(aggregate(as.symbol(paste0("table1DDS(", "D$sex", ")"))))
check("table1DDS: list(table = a 1-row data.frame with Total, message)",
      identical(names(out), c("table", "message")) && is.data.frame(out$table) &&
        identical(colnames(out$table), c("female", "male", "Total")) &&
        out$table$Total == 500 && identical(out$message, "valid Table"))

# ds.table: asFactorDS1 per variable, then call("tableDS", named arguments)
rvar <- "D$sex"
cvar <- "D$region"
levels.sex <- safely(aggregate(call("asFactorDS1", rvar)))
calltext <- call("tableDS", rvar.transmit = rvar, cvar.transmit = cvar, stvar.transmit = NULL,
                 rvar.all.unique.levels.transmit = paste0(levels.sex, collapse = ","),
                 cvar.all.unique.levels.transmit = paste0(levels.region, collapse = ","),
                 stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL,
                 useNA.transmit = "always", force.nfilter.transmit = NULL)
out <- safely(aggregate(calltext))
check("tableDS: a table with dimnames rvar and cvar (NA row and column with 'always')",
      inherits(out, "table") && identical(names(dimnames(out)), c("rvar", "cvar")) &&
        identical(dim(out), c(3L, 6L)) && identical(dimnames(out)$rvar, c(levels.sex, NA)) &&
        sum(out) == 500)
calltext <- call("tableDS", rvar.transmit = "D$id", cvar.transmit = NULL, stvar.transmit = NULL,
                 rvar.all.unique.levels.transmit = paste0(1:500, collapse = ","),
                 cvar.all.unique.levels.transmit = NULL, stvar.all.unique.levels.transmit = NULL,
                 exclude.transmit = NULL, useNA.transmit = "no", force.nfilter.transmit = NULL)
out <- safely(aggregate(calltext))
check("tableDS with small cells: the message string ds.table reads",
      identical(out, "Failed: at least one cell has a non-zero count less than nfilter.tab i.e. 3"))
calltext.assign <- call("tableDS.assign", rvar.transmit = rvar, cvar.transmit = cvar,
                        stvar.transmit = NULL,
                        rvar.all.unique.levels.transmit = paste0(levels.sex, collapse = ","),
                        cvar.all.unique.levels.transmit = paste0(levels.region, collapse = ","),
                        stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL,
                        useNA.transmit = "always")
safely(assign("table.newobj", calltext.assign))
out <- safely(aggregate(call("tableDS2", newobj = "table.newobj", rvar.transmit = rvar,
                             cvar.transmit = cvar, stvar.transmit = NULL)))
check("tableDS2: list(table.cell.IDs, table.dim, table.dimnames, table.structure_and_cell.order)",
      identical(names(out), c("table.cell.IDs", "table.dim", "table.dimnames",
                              "table.structure_and_cell.order")) &&
        identical(out$table.cell.IDs, 1:18) && identical(out$table.dim, c(3L, 6L)) &&
        identical(names(dimnames(out$table.structure_and_cell.order)), c(rvar, cvar)))

# ---- ds.histogram

x <- "D$age"
method.indicator <- 2
k <- 3
noise <- 0.25
cally1 <- paste0("histogramDS1(", x, ",", method.indicator, ",", k, ",", noise, ")")
ranges <- safely(aggregate(as.symbol(cally1)))
check("histogramDS1: c(min, max)", is.double(ranges) && length(ranges) == 2 &&
        ranges[1] < ranges[2])
num.breaks <- 10
call <- paste0("histogramDS2(", x, ",", num.breaks, ",", ranges[1], ",", ranges[2], ",",
               method.indicator, ",", k, ",", noise, ")")
out <- safely(aggregate(call))
check("histogramDS2: list(histobject = a 'histogram', invalidcells)",
      identical(names(out), c("histobject", "invalidcells")) &&
        inherits(out$histobject, "histogram") &&
        identical(names(out$histobject), c("breaks", "counts", "density", "mids", "xname",
                                           "equidist")) &&
        length(out$histobject$counts) == num.breaks && sum(out$histobject$counts) == 500)

# ---- ds.cor, ds.cov

out <- safely(aggregate(call("corDS", "D$age", "D$height")))
check("corDS: list(sums.of.products, sums, complete.counts, na.counts, sums.of.squares)",
      identical(names(out), c("sums.of.products", "sums", "complete.counts", "na.counts",
                              "sums.of.squares")) &&
        identical(dim(out$sums.of.products), c(2L, 2L)) &&
        identical(colnames(out$sums.of.products), c("x.val", "y.val")) &&
        identical(names(out$na.counts), c("Number of NAs in each column",
                                          "Number of NAs casewise")))
out <- safely(aggregate(call("covDS", "D$age", "D$bmi", "pairwise.complete")))
check("covDS: list(sums.of.products, sums, complete.counts, na.counts, errorMessage)",
      identical(names(out), c("sums.of.products", "sums", "complete.counts", "na.counts",
                              "errorMessage")) &&
        identical(dim(out$sums), c(2L, 2L)) && is.na(out$errorMessage) &&
        identical(names(out$na.counts), c("Number of NAs in each column",
                                          "Number of NAs pairwise")))

# ---- ds.glm

formula <- stats::as.formula("D$outcome ~ D$age + D$bmi")
family <- "binomial"
cally1 <- call("glmDS1", formula, family, NULL, NULL, NULL)
out <- safely(aggregate(cally1))
check("glmDS1: the set-up list ds.glm reads",
      identical(names(out), c("dimX", "coef.names", "y.invalid", "Xpar.invalid", "w.invalid",
                              "o.invalid", "glm.saturation.invalid", "errorMessage")) &&
        length(out$dimX) == 2 && out$dimX[2] == 3 &&
        identical(out$coef.names, c("(Intercept)", "D$age", "D$bmi")) &&
        identical(out$errorMessage, "No errors"))
beta.vect.temp <- paste0(as.character(rep(0, 3)), collapse = ",")
cally2 <- call("glmDS2", formula, family, beta.vect.temp, NULL, NULL, NULL)
out <- safely(aggregate(cally2))
check("glmDS2: one iteration's list, in dsBase's order",
      identical(names(out), c("family", "info.matrix", "score.vect", "numsubs", "dev", "Nvalid",
                              "Nmissing", "Ntotal", "disclosure.risk", "errorMessage2")) &&
        inherits(out$family, "family") && identical(out$family$family, "binomial") &&
        identical(dim(out$info.matrix), c(3L, 3L)) && identical(dim(out$score.vect), c(3L, 1L)) &&
        identical(rownames(out$info.matrix), c("(Intercept)", "D$age", "D$bmi")) &&
        out$numsubs == out$Nvalid && out$Ntotal == 500 && out$disclosure.risk == 0)
# ds.glm solves with them as it does: the first step of Fisher scoring
step <- safely(solve(out$info.matrix, out$score.vect))
check("glmDS2's matrices give ds.glm's update", is.matrix(step) && all(is.finite(step)))
out <- safely(aggregate(call("glmDS1", stats::as.formula("bmi ~ age + sex"), "gaussian",
                             NULL, NULL, "D")))
check("glmDS1 with data = 'D' names the columns",
      identical(out$coef.names, c("(Intercept)", "age", "sexmale")))

# ---- ds.dataFrameSubset, ds.asNumeric, ds.c

calltext1 <- call("dataFrameSubsetDS1", "D", "D$age", "65", 6, NULL, NULL, FALSE)
out <- safely(aggregate(calltext1))
check("dataFrameSubsetDS1: the success message",
      identical(out, "Subsetting undertaken without problems"))
calltext2 <- call("dataFrameSubsetDS2", "D", "D$age", "65", 6, NULL, NULL, FALSE)
safely(assign("Old", calltext2))
dims <- safely(aggregate(call("dimDS", "Old")))
check("dataFrameSubsetDS2 (assign): a data frame with all the columns",
      identical(safely(aggregate(call("classDS", "Old"))), "data.frame") &&
        length(dims) == 2 && dims[2] == 11 && dims[1] > 0 && dims[1] < 500)
out <- safely(aggregate(call("messageDS", "Old")))
check("messageDS: a status string", is.character(out) && length(out) == 1)
out <- safely(aggregate(call("dataFrameSubsetDS1", "D", "D$id", "1", 1, NULL, NULL, FALSE)))
check("dataFrameSubsetDS1 of one row: refused", is.null(out))
safely(assign("sexnum", call("asNumericDS", "D$sex")))
check("asNumericDS (assign): a numeric vector",
      identical(safely(aggregate(call("classDS", "sexnum"))), "numeric"))
safely(assign("three", as.symbol("c(1,2,3)")))
check("c (assign, vectorDS): a vector", identical(safely(aggregate(call("lengthDS", "three"))),
                                                  3L))
# ds.c itself sends cDS(list(...)) (paste0 in R/ds.c.R); dsBase 6.3.3 allows it only at
# the 'permissive' or 'avocado' privacy level, so at the default 'banana' it is BLOCKED
out <- tryCatch(assign("agec", as.symbol(paste0("cDS(list(", paste("D$age", collapse = ","), "))"))),
                error = function(e) conditionMessage(e))
check("cDS (assign, ds.c): blocked as in dsBase at the default privacy level",
      is.character(out) && grepl("BLOCKED: The server is running in .non-permissive. mode", out))

POST(handle = h, path = "/logout")
cat("1..", count, "\n", sep = "")
quit(status = min(failures, 100))
