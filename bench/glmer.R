# glmer (lme4) on a bench/approx.py data file, as a whole process: read the CSV, fit
# cbind(y, n - y) ~ 1 + (1 | g) by maximum likelihood (Laplace, or adaptive Gauss-Hermite
# quadrature with nAGQ points), write the estimates (fixed effects, group SD, each group's
# conditional mode and SD) to OUT.csv and the scalars to OUT.json-like lines on stdout.
#
#   Rscript bench/glmer.R DATA.csv OUT_PREFIX [nAGQ] [modes]
#
# "modes": write the conditional modes only, without their SDs (ranef's condVar, which at a
# million groups takes longer than the fit: over 10 minutes here, the fit under 3)
#
# R and lme4 from Debian's packages: apt-get install r-cran-lme4
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1])
nagq <- if (length(args) >= 3) as.integer(args[3]) else 1L
data$g <- factor(data$g)
m <- glmer(cbind(y, n - y) ~ 1 + (1 | g), data = data, family = binomial, nAGQ = nagq)
cond_var <- !(length(args) >= 4 && args[4] == "modes")
re <- ranef(m, condVar = cond_var)$g
sds <- if (cond_var) sqrt(attr(re, "postVar")[1, 1, ]) else NA
out <- data.frame(g = rownames(re), mode = re[, 1] + fixef(m)[1], sd = sds)
write.csv(out, paste0(args[2], "_groups.csv"), row.names = FALSE)
cat(sprintf('{"intercept": %.6f, "sd_g": %.6f, "nAGQ": %d, "converged": %s}\n',
            fixef(m)[1], attr(VarCorr(m)$g, "stddev"), nagq,
            if (is.null(m@optinfo$conv$lme4$messages)) "true" else "false"))
